using System.Globalization;
using Grpc.Core;
using KvStore.Server.Node;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting;

/// <summary>
/// systemd's Type=notify protocol, as etcd speaks it: READY=1 once the member serves clients (its listeners are up,
/// it has a leader and a linearizable read goes through), STOPPING=1 when it shuts down, and WATCHDOG=1 at half the
/// unit's WatchdogSec when systemd asks for it (WATCHDOG_USEC). Without NOTIFY_SOCKET (not started by systemd) it
/// does nothing.
/// </summary>
public sealed class SystemdReadiness(
    ISystemdNotifier notifier, IReplicationProgress replication, ILinearizableReads reads, IHostApplicationLifetime lifetime, ILogger<SystemdReadiness> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!notifier.IsEnabled)
        {
            return;
        }

        try
        {
            await WaitStartedAsync(stoppingToken).ConfigureAwait(false);
            await WaitServingAsync(stoppingToken).ConfigureAwait(false);
            notifier.Notify(ServiceState.Ready);
            Log.SystemdReady(logger);
            if (WatchdogInterval() is { } interval)
            {
                using var timer = new PeriodicTimer(interval);
                while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
                {
                    notifier.Notify(new ServiceState("WATCHDOG=1"));
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown before (or while) serving.
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        if (notifier.IsEnabled)
        {
            notifier.Notify(ServiceState.Stopping);
        }

        await base.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Half of systemd's watchdog timeout (WATCHDOG_USEC, microseconds), or null when no watchdog is set.</summary>
    private static TimeSpan? WatchdogInterval() =>
        long.TryParse(Environment.GetEnvironmentVariable("WATCHDOG_USEC"), NumberStyles.None, CultureInfo.InvariantCulture, out var usec) && usec > 0
            ? TimeSpan.FromMicroseconds(usec / 2)
            : null;

    private Task WaitStartedAsync(CancellationToken cancellationToken)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lifetime.ApplicationStarted.Register(() => started.TrySetResult());
        return started.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Waits until a linearizable read succeeds: a leader exists and this member has applied up to its commit.</summary>
    private async Task WaitServingAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                await replication.WaitForLeaderAsync(cancellationToken).ConfigureAwait(false);
                await reads.WaitForReadIndexAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (RpcException)
            {
                // No quorum yet (a member started before its peers): try again at the next leader change or apply.
                await replication.NextChangeAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
