using Etcdserverpb;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Lease;
using KvStore.Server.Node;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Api;

/// <summary>
/// etcd's Lease service on any member. Grant and Revoke are proposed (they change replicated state; a follower's
/// proposal goes to the leader inside Raft); keep-alive, time-to-live and list are answered by the leader's lessor,
/// which a follower reaches through <see cref="LeaseForwarder"/>. Headers are this member's, as etcd fills them.
/// Unknown leases: TimeToLive answers TTL -1, KeepAlive answers TTL 0 (etcd).
/// </summary>
public sealed class LeaseService(Lessor lessor, IProposer proposer, HeaderFactory headers, MvccStore store, LeaseForwarder forwarder, Quota quota)
    : Etcdserverpb.Lease.LeaseBase
{
    /// <inheritdoc/>
    public override async Task<LeaseGrantResponse> LeaseGrant(LeaseGrantRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var grant = lessor.PrepareGrant(request); // ID and minimum TTL decided before proposing: every member applies the same
        await quota.EnsureRoomAsync(Quota.Cost(grant), context.CancellationToken).ConfigureAwait(false);

        var result = (LeaseGrantResponse)await proposer.ProposeAsync(new InternalRequest { LeaseGrant = grant }, context.CancellationToken)
            .ConfigureAwait(false);
        result.Header = headers.Create(result.Header?.Revision ?? store.CurrentRevision);
        return result;
    }

    /// <inheritdoc/>
    public override async Task<LeaseRevokeResponse> LeaseRevoke(LeaseRevokeRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var result = (LeaseRevokeResponse)await proposer.ProposeAsync(new InternalRequest { LeaseRevoke = request }, context.CancellationToken)
            .ConfigureAwait(false);
        result.Header = headers.Create(result.Header?.Revision ?? store.CurrentRevision);
        return result;
    }

    /// <inheritdoc/>
    public override async Task<LeaseTimeToLiveResponse> LeaseTimeToLive(LeaseTimeToLiveRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var response = await forwarder.TimeToLiveAsync(request, context.CancellationToken).ConfigureAwait(false);
        response.Header = headers.Create(store.CurrentRevision);
        return response;
    }

    /// <inheritdoc/>
    public override async Task<LeaseLeasesResponse> LeaseLeases(LeaseLeasesRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var response = await forwarder.LeasesAsync(context.CancellationToken).ConfigureAwait(false);
        response.Header = headers.Create(store.CurrentRevision);
        return response;
    }

    /// <inheritdoc/>
    public override async Task LeaseKeepAlive(
        IAsyncStreamReader<LeaseKeepAliveRequest> requestStream, IServerStreamWriter<LeaseKeepAliveResponse> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(requestStream);
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        var cancellationToken = context.CancellationToken;
        try
        {
            while (await requestStream.MoveNext(cancellationToken).ConfigureAwait(false))
            {
                var request = requestStream.Current;

                // The header is taken before renewing (as etcd does): a revoke at revision r is never hidden behind
                // a keep-alive reporting a later revision.
                var header = headers.Create(store.CurrentRevision);
                var ttl = await forwarder.KeepAliveAsync(request.ID, cancellationToken).ConfigureAwait(false);
                await responseStream.WriteAsync(new LeaseKeepAliveResponse { Header = header, ID = request.ID, TTL = ttl ?? 0 }, cancellationToken)
                    .ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The client went away.
        }
    }
}
