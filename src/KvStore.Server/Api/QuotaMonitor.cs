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
    // Released by the apply loop only (a single releaser), so checking the count first keeps it at most 1.
    private readonly SemaphoreSlim _overQuota = new(0, 1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        replication.Applied += OnApplied;
        try
        {
            while (true)
            {
                await _overQuota.WaitAsync(stoppingToken).ConfigureAwait(false);
                await quota.RaiseNoSpaceAsync(0, stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown.
        }
        finally
        {
            replication.Applied -= OnApplied;
        }
    }

    public override void Dispose()
    {
        _overQuota.Dispose();
        base.Dispose();
    }

    /// <summary>
    /// Runs on the apply loop after every applied batch: one comparison, and a wake-up of the monitor only when the store
    /// is past its quota. Waking it at every apply cost each write a thread-pool hand-off.
    /// </summary>
    private void OnApplied()
    {
        if (quota.IsExceeded && _overQuota.CurrentCount == 0)
        {
            _overQuota.Release();
        }
    }
}
