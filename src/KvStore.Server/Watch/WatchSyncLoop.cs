using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Watch;

/// <summary>Runs <see cref="WatchHub.SyncOnce"/> when a watcher becomes unsynced and every sync interval.</summary>
public sealed class WatchSyncLoop(WatchHub hub, ILogger<WatchSyncLoop> logger) : BackgroundService
{
    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await hub.WaitForSyncWorkAsync(stoppingToken).ConfigureAwait(false);
                try
                {
                    hub.SyncOnce();
                }
                catch (Exception ex)
                {
                    Log.SyncFailed(logger, ex);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown: a normal end, not a failed background service.
        }
    }
}
