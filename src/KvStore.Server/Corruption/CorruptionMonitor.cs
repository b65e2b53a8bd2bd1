using KvStore.Server.Apply;
using KvStore.Server.Replication;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Corruption;

/// <summary>
/// --experimental-corrupt-check-time: every interval, while this member leads, runs a <see cref="PeriodicHashCheck"/>
/// against the followers. Followers do nothing. The check reads member-local state, so it only ever leads to a
/// proposal; the applier never looks at hashes.
/// </summary>
public sealed class CorruptionMonitor : BackgroundService
{
    private readonly RaftHost _node;
    private readonly TimeSpan _interval;
    private readonly PeriodicHashCheck _check;

    public CorruptionMonitor(RaftHost node, PeerHashClient peers, AlarmState alarms, CorruptCheckInterval interval, ILogger<CorruptionMonitor> logger)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(interval);
        _node = node;
        _interval = interval.Value;
        _check = new PeriodicHashCheck(node.Store, node.MemberId, peers, node, alarms, node.RequestTimeout, logger);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_interval);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                if (_node.IsLeader)
                {
                    await _check.RunAsync(stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown.
        }
    }
}

/// <summary>The period of <see cref="CorruptionMonitor"/> (--experimental-corrupt-check-time, above zero).</summary>
public sealed record CorruptCheckInterval(TimeSpan Value);
