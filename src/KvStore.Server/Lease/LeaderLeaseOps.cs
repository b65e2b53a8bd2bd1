using Etcdserverpb;
using KvStore.Server.Node;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Lease;

/// <summary>
/// The lease requests only the leader's lessor can answer (renewals and remaining TTLs live there), served on this
/// member when it leads — for its own clients and for followers that forward to it (<see cref="PeerLeaseService"/>).
/// Each first waits until everything this member had committed is applied, so a write acknowledged by any member
/// before the request is reflected (etcd's waitAppliedIndex). Throws <c>etcdserver: not leader</c> when this member
/// does not lead; a forwarding follower then retries with the new leader.
/// </summary>
public sealed class LeaderLeaseOps(
    Lessor lessor, ILeaderStatus leader, LessorOptions options, NodeState state, IProposer proposer, IReplicationProgress replication, ILogger<LeaderLeaseOps> logger)
{
    /// <summary>
    /// Renews <paramref name="id"/> for its full TTL; null when there is no such lease (etcd answers TTL 0). A
    /// checkpointed remaining TTL no longer holds after a renewal: it is cleared by proposing 0 (etcd), at most once
    /// per checkpoint since only a lease that has one triggers it.
    /// </summary>
    public async Task<long?> KeepAliveAsync(long id, CancellationToken cancellationToken)
    {
        await WaitAppliedAsync(cancellationToken).ConfigureAwait(false);
        lessor.FollowLeadership(leader.IsLeader, options.PromoteExtension);
        var clearCheckpoint = lessor.HasCheckpoint(id);
        var ttl = await lessor.RenewAsync(id, cancellationToken).ConfigureAwait(false);
        if (ttl is not null && clearCheckpoint)
        {
            var clear = new LeaseCheckpointRequest();
            clear.Checkpoints.Add(new LeaseCheckpoint { ID = id, RemainingTTL = 0 });
            _ = LeaseExpiryLoop.ProposeCheckpointAsync(clear, proposer, logger, CancellationToken.None);
        }

        return ttl;
    }

    /// <summary>Remaining and granted TTL (and keys if asked); TTL -1 when there is no such lease. No header.</summary>
    public async Task<LeaseTimeToLiveResponse> TimeToLiveAsync(LeaseTimeToLiveRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        await WaitAppliedAsync(cancellationToken).ConfigureAwait(false);
        EnsurePrimary();
        return lessor.TimeToLive(request.ID, request.Keys) ?? new LeaseTimeToLiveResponse { ID = request.ID, TTL = -1 };
    }

    /// <summary>Every lease, soonest expiry first. No header.</summary>
    public async Task<LeaseLeasesResponse> LeasesAsync(CancellationToken cancellationToken)
    {
        await WaitAppliedAsync(cancellationToken).ConfigureAwait(false);
        EnsurePrimary();
        var response = new LeaseLeasesResponse();
        response.Leases.AddRange(lessor.Leases());
        return response;
    }

    private void EnsurePrimary()
    {
        lessor.FollowLeadership(leader.IsLeader, options.PromoteExtension);
        if (!lessor.IsPrimary)
        {
            throw EtcdErrors.NotLeader.Exception();
        }
    }

    private async Task WaitAppliedAsync(CancellationToken cancellationToken)
    {
        if (!leader.IsLeader)
        {
            throw EtcdErrors.NotLeader.Exception();
        }

        var committed = state.CommittedIndex;
        if (state.AppliedIndex >= committed)
        {
            return;
        }

        try
        {
            await replication.WaitAppliedAsync(committed, cancellationToken).WaitAsync(replication.RequestTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw EtcdErrors.TimeoutWaitAppliedIndex.Exception();
        }
    }
}
