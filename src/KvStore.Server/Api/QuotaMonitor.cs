using KvStore.Server.Node;
using Microsoft.Extensions.Hosting;

namespace KvStore.Server.Api;

/// <summary>
/// After entries are applied, proposes this member's NOSPACE alarm if its store has grown past its own quota: writes
/// accepted by members with more room (or a larger --quota-backend-bytes) land here too, and etcd raises the alarm on
/// every member whose quota they exceed. The check reads member-local state, so it only ever leads to a proposal; the
/// applier itself never looks at the quota.
/// </summary>
public sealed class QuotaMonitor(IReplicationProgress replication, Quota quota) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await replication.NextChangeAsync(stoppingToken).ConfigureAwait(false);
                if (quota.IsExceeded)
                {
                    await quota.RaiseNoSpaceAsync(0, stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown.
        }
    }
}
