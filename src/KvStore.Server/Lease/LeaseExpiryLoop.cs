using Etcdserverpb;
using KvStore.Internal;
using KvStore.Server.Auth;
using KvStore.Server.Node;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Lease;

/// <summary>
/// The leader's lease clock. Every <see cref="LessorOptions.ExpiryCheckInterval"/> it follows leadership changes
/// (promote / demote the lessor) and proposes a LeaseRevoke for each expired lease. Leases expire only by that
/// proposal being committed and applied, never by a local delete.
/// </summary>
public sealed class LeaseExpiryLoop(
    Lessor lessor, IProposer proposer, ILeaderStatus leader, LessorOptions options, TimeProvider time, IMemberCredentials credentials,
    ILogger<LeaseExpiryLoop> logger)
    : BackgroundService
{
    private int _inFlight;

    /// <summary>Revoke proposals sent and not finished yet.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>
    /// One check: sync leadership, propose revokes for expired leases, then (lease checkpointing on) the remaining
    /// TTLs that are due. Returns the leases proposed for revocation.
    /// </summary>
    public IReadOnlyList<long> CheckOnce(CancellationToken cancellationToken)
    {
        lessor.FollowLeadership(leader.IsLeader, options.PromoteExtension);

        var expired = lessor.TakeExpired(options.MaxRevokesPerCheck);
        foreach (var id in expired)
        {
            _ = ProposeRevokeAsync(id, cancellationToken);
        }

        if (lessor.TakeDueCheckpoints() is { } checkpoints)
        {
            _ = ProposeCheckpointAsync(checkpoints, proposer, logger, cancellationToken);
        }

        return expired;
    }

    /// <summary>
    /// Proposes remaining TTLs (or, after a renewal, 0 to clear one). Fire and forget: a lost checkpoint only means a
    /// new leader extends the lease from an older remaining TTL.
    /// </summary>
    internal static async Task ProposeCheckpointAsync(LeaseCheckpointRequest checkpoints, IProposer proposer, ILogger logger, CancellationToken cancellationToken)
    {
        try
        {
            await proposer.ProposeAsync(new InternalRequest { LeaseCheckpoint = checkpoints }, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Shutting down.
        }
        catch (Exception ex)
        {
            Log.CheckpointProposalFailed(logger, checkpoints.Checkpoints.Count, ex);
        }
    }

    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.ExpiryCheckInterval, time);
        try
        {
            do
            {
                try
                {
                    CheckOnce(stoppingToken);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Log.ExpiryCheckFailed(logger, ex);
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown: a normal end, not a failed background service.
        }
    }

    private async Task ProposeRevokeAsync(long id, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _inFlight);
        try
        {
            Log.Expired(logger, id);
            // Checked at apply like a client's revoke (write on every key of the lease), with root's rights.
            var request = new InternalRequest { LeaseRevoke = new LeaseRevokeRequest { ID = id }, Header = credentials.MemberHeader() };
            await proposer.ProposeAsync(request, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Shutting down; the next leader will expire the lease.
        }
        catch (Exception ex)
        {
            // Typically "lease not found" (revoked meanwhile) or a lost proposal; retried after the retry interval.
            Log.RevokeProposalFailed(logger, id, ex);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }
}
