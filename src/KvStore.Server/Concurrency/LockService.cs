using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Auth;
using V3lockpb;

namespace KvStore.Server.Concurrency;

/// <summary>
/// etcd's <c>v3lockpb.Lock</c> service, on any member, as etcd's server-side mutex behaves: the lock key is
/// <c>&lt;name&gt;/&lt;lease hex&gt;</c> attached to the request's lease (a new 60 s lease when it names none); the
/// owner is the key created first under <c>&lt;name&gt;/</c>; a waiter holds the lock once every key created before its
/// own is deleted. A waiter that gives up (client cancel, error) deletes its key.
/// </summary>
public sealed class LockService(LocalClient client, RequestAuthenticator auth) : V3lockpb.Lock.LockBase
{
    /// <inheritdoc/>
    public override Task<LockResponse> Lock(LockRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return ConcurrencyErrors.RelayAsync(() => LockAsync(request, auth.Header(context), context.CancellationToken));
    }

    /// <inheritdoc/>
    public override Task<UnlockResponse> Unlock(UnlockRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return ConcurrencyErrors.RelayAsync(async () =>
        {
            var deleted = await client.DeleteAsync(request.Key, auth.Header(context), context.CancellationToken).ConfigureAwait(false);
            return new UnlockResponse { Header = deleted.Header };
        });
    }

    private async Task<LockResponse> LockAsync(LockRequest request, InternalRequestHeader caller, CancellationToken cancellationToken)
    {
        var lease = request.Lease;
        if (lease == 0)
        {
            lease = (await client.GrantAsync(Waits.DefaultSessionTtl, cancellationToken).ConfigureAwait(false)).ID;
        }

        var prefix = Waits.Concat(request.Name, ByteString.CopyFromUtf8("/"));
        var myKey = Waits.ParticipantKey(prefix, lease);

        // Enqueue (or find the key this lease already has) and read the current owner in one transaction.
        var txn = new TxnRequest();
        txn.Compare.Add(new Compare { Key = myKey, Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0 });
        txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = myKey, Lease = lease } });
        txn.Success.Add(new RequestOp { RequestRange = Waits.FirstCreated(prefix) });
        txn.Failure.Add(new RequestOp { RequestRange = new RangeRequest { Key = myKey } });
        txn.Failure.Add(new RequestOp { RequestRange = Waits.FirstCreated(prefix) });
        var response = await client.TxnAsync(txn, caller, cancellationToken).ConfigureAwait(false);
        var myRevision = response.Succeeded ? response.Header.Revision : response.Responses[0].ResponseRange.Kvs[0].CreateRevision;
        var owner = response.Responses[1].ResponseRange.Kvs;
        if (owner.Count == 0 || owner[0].CreateRevision == myRevision)
        {
            return new LockResponse { Header = response.Header, Key = myKey };
        }

        RangeResponse mine;
        try
        {
            await Waits.WaitDeletesAsync(client, prefix, myRevision - 1, cancellationToken).ConfigureAwait(false);

            // The session may have expired meanwhile (the lease revoked our key too).
            mine = await client.RangeAsync(new RangeRequest { Key = myKey }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException)
        {
            await client.TryDeleteAsync(myKey, caller).ConfigureAwait(false);
            throw;
        }

        if (mine.Kvs.Count == 0)
        {
            throw ConcurrencyErrors.SessionExpired.Exception();
        }

        return new LockResponse { Header = mine.Header, Key = myKey };
    }
}
