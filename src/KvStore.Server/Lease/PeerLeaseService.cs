using Etcdserverpb;
using Grpc.Core;
using KvStore.Raft.Wire;
using KvStore.Server.Peer;

namespace KvStore.Server.Lease;

/// <summary>
/// <c>kvstore.raft.PeerLease</c>: the leader's side of lease forwarding (<see cref="LeaseForwarder"/> is the
/// follower's). Checks the caller's cluster and member IDs like every peer service, then answers through
/// <see cref="LeaderLeaseOps"/> ("etcdserver: not leader" when this member does not lead). Peer port only.
/// </summary>
public sealed class PeerLeaseService(LeaderLeaseOps leader, PeerTransport transport) : PeerLease.PeerLeaseBase
{
    /// <inheritdoc/>
    public override async Task<LeaseKeepAliveResponse> KeepAlive(LeaseKeepAliveRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        var ttl = await leader.KeepAliveAsync(request.ID, context.CancellationToken).ConfigureAwait(false);
        return new LeaseKeepAliveResponse { ID = request.ID, TTL = ttl ?? 0 };
    }

    /// <inheritdoc/>
    public override Task<LeaseTimeToLiveResponse> TimeToLive(LeaseTimeToLiveRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        return leader.TimeToLiveAsync(request, context.CancellationToken);
    }

    /// <inheritdoc/>
    public override Task<LeaseLeasesResponse> Leases(LeaseLeasesRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        return leader.LeasesAsync(context.CancellationToken);
    }
}
