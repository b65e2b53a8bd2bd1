using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Auth;
using V3electionpb;

namespace KvStore.Server.Concurrency;

/// <summary>
/// etcd's <c>v3electionpb.Election</c> service, on any member, as etcd's server-side election behaves. A candidate's
/// key is <c>&lt;name&gt;/&lt;lease hex&gt;</c> holding its value, attached to its lease (a new 60 s lease when the
/// request names none); the leader is the key created first under <c>&lt;name&gt;/</c>. Campaign returns once every
/// key created before the candidate's is deleted. Proclaim and Resign act only while the leader key still has the
/// create revision the caller was elected with ("election: not leader" otherwise for Proclaim).
/// </summary>
public sealed class ElectionService(LocalClient client, RequestAuthenticator auth) : V3electionpb.Election.ElectionBase
{
    /// <inheritdoc/>
    public override Task<CampaignResponse> Campaign(CampaignRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return ConcurrencyErrors.RelayAsync(() => CampaignAsync(request, auth.Header(context), context.CancellationToken));
    }

    /// <inheritdoc/>
    public override Task<ProclaimResponse> Proclaim(ProclaimRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return ConcurrencyErrors.RelayAsync(async () =>
        {
            var leader = request.Leader ?? throw ConcurrencyErrors.MissingLeaderKey.Exception();
            var header = await ProclaimAsync(leader.Key, leader.Rev, leader.Lease, request.Value, auth.Header(context), context.CancellationToken).ConfigureAwait(false);
            return new ProclaimResponse { Header = header };
        });
    }

    /// <inheritdoc/>
    public override Task<ResignResponse> Resign(ResignRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return ConcurrencyErrors.RelayAsync(async () =>
        {
            var leader = request.Leader ?? throw ConcurrencyErrors.MissingLeaderKey.Exception();
            var header = await ResignAsync(leader.Key, leader.Rev, auth.Header(context), context.CancellationToken).ConfigureAwait(false);
            return new ResignResponse { Header = header };
        });
    }

    /// <inheritdoc/>
    public override Task<LeaderResponse> Leader(LeaderRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return ConcurrencyErrors.RelayAsync(async () =>
        {
            var current = await client.RangeAsync(Waits.FirstCreated(Prefix(request.Name)), context.CancellationToken).ConfigureAwait(false);
            if (current.Kvs.Count == 0)
            {
                throw ConcurrencyErrors.ElectionNoLeader.Exception();
            }

            return new LeaderResponse { Header = current.Header, Kv = current.Kvs[0] };
        });
    }

    /// <inheritdoc/>
    public override async Task Observe(LeaderRequest request, IServerStreamWriter<LeaderResponse> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            await ObserveAsync(Prefix(request.Name), responseStream, context.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RpcException or OperationCanceledException && !context.CancellationToken.IsCancellationRequested)
        {
            // etcd's observer ends its stream quietly when a read or watch underneath fails.
        }
    }

    private static ByteString Prefix(ByteString name) => Waits.Concat(name, ByteString.CopyFromUtf8("/"));

    private async Task<CampaignResponse> CampaignAsync(CampaignRequest request, InternalRequestHeader caller, CancellationToken cancellationToken)
    {
        var lease = request.Lease;
        if (lease == 0)
        {
            lease = (await client.GrantAsync(Waits.DefaultSessionTtl, cancellationToken).ConfigureAwait(false)).ID;
        }

        var prefix = Prefix(request.Name);
        var key = Waits.ParticipantKey(prefix, lease);
        var txn = new TxnRequest();
        txn.Compare.Add(new Compare { Key = key, Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0 });
        txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = key, Value = request.Value, Lease = lease } });
        txn.Failure.Add(new RequestOp { RequestRange = new RangeRequest { Key = key } });
        var response = await client.TxnAsync(txn, caller, cancellationToken).ConfigureAwait(false);
        var revision = response.Header.Revision;
        if (!response.Succeeded)
        {
            // This lease already campaigns: keep its place in the queue, and its value up to date.
            var existing = response.Responses[0].ResponseRange.Kvs[0];
            revision = existing.CreateRevision;
            if (existing.Value != request.Value)
            {
                try
                {
                    await ProclaimAsync(key, revision, lease, request.Value, caller, cancellationToken).ConfigureAwait(false);
                }
                catch (RpcException)
                {
                    await TryResignAsync(key, revision, caller).ConfigureAwait(false);
                    throw;
                }
            }
        }

        try
        {
            await Waits.WaitDeletesAsync(client, prefix, revision - 1, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The candidate gave up: withdraw its key (etcd resigns only on cancellation).
            await TryResignAsync(key, revision, caller).ConfigureAwait(false);
            throw;
        }

        return new CampaignResponse
        {
            Header = response.Header,
            Leader = new LeaderKey { Name = request.Name, Key = key, Rev = revision, Lease = lease },
        };
    }

    private async Task<ResponseHeader> ProclaimAsync(ByteString key, long revision, long lease, ByteString value, InternalRequestHeader caller, CancellationToken cancellationToken)
    {
        var txn = new TxnRequest();
        txn.Compare.Add(new Compare { Key = key, Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = revision });
        txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = key, Value = value, Lease = lease } });
        var response = await client.TxnAsync(txn, caller, cancellationToken).ConfigureAwait(false);
        if (!response.Succeeded)
        {
            throw ConcurrencyErrors.ElectionNotLeader.Exception();
        }

        return response.Header;
    }

    private async Task<ResponseHeader> ResignAsync(ByteString key, long revision, InternalRequestHeader caller, CancellationToken cancellationToken)
    {
        var txn = new TxnRequest();
        txn.Compare.Add(new Compare { Key = key, Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = revision });
        txn.Success.Add(new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = key } });
        return (await client.TxnAsync(txn, caller, cancellationToken).ConfigureAwait(false)).Header;
    }

    private async Task TryResignAsync(ByteString key, long revision, InternalRequestHeader caller)
    {
        try
        {
            await ResignAsync(key, revision, caller, CancellationToken.None).ConfigureAwait(false);
        }
        catch (RpcException)
        {
            // No leader or quorum right now: the key goes when its lease expires.
        }
    }

    /// <summary>
    /// etcd's observe loop: send the current leader (or wait for the first put under the prefix), then every new value
    /// of that leader key until it is deleted, then start over with the next leader.
    /// </summary>
    private async Task ObserveAsync(ByteString prefix, IServerStreamWriter<LeaderResponse> stream, CancellationToken cancellationToken)
    {
        while (true)
        {
            var current = await client.RangeAsync(Waits.FirstCreated(prefix), cancellationToken).ConfigureAwait(false);
            Mvccpb.KeyValue kv;
            ResponseHeader header;
            if (current.Kvs.Count > 0)
            {
                (kv, header) = (current.Kvs[0], current.Header);
            }
            else
            {
                // No leader yet: wait for the first put under the prefix.
                await using var first = client.Watch(new WatchCreateRequest
                {
                    Key = prefix,
                    RangeEnd = Waits.PrefixEnd(prefix),
                    StartRevision = current.Header.Revision,
                });
                Mvccpb.Event? put = null;
                WatchResponse? response = null;
                while (put is null)
                {
                    response = await first.NextAsync(cancellationToken).ConfigureAwait(false);
                    put = response.Events.FirstOrDefault(e => e.Type == Mvccpb.Event.Types.EventType.Put);
                }

                kv = put.Kv;
                header = response!.Header.Clone();
                header.Revision = kv.ModRevision;
            }

            await stream.WriteAsync(new LeaderResponse { Header = header, Kv = kv }, cancellationToken).ConfigureAwait(false);

            await using var leaderKey = client.Watch(new WatchCreateRequest { Key = kv.Key, StartRevision = header.Revision + 1 });
            var deleted = false;
            while (!deleted)
            {
                var response = await leaderKey.NextAsync(cancellationToken).ConfigureAwait(false);
                foreach (var e in response.Events)
                {
                    if (e.Type == Mvccpb.Event.Types.EventType.Delete)
                    {
                        deleted = true;
                        break;
                    }

                    await stream.WriteAsync(new LeaderResponse { Header = response.Header, Kv = e.Kv }, cancellationToken).ConfigureAwait(false);
                }
            }
        }
    }
}
