using System.Threading.Channels;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Api;
using KvStore.Server.Apply;
using KvStore.Server.Lease;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Watch;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Concurrency;

/// <summary>
/// The KV, lease and watch calls the Lock and Election services make, served in process on this member exactly as
/// the client port would serve them (validation, quota, proposals through Raft, linearizable reads behind the read
/// barrier, watches on this member's hub). etcd builds the same services on an in-process clientv3.
/// </summary>
public sealed class LocalClient(IProposer proposer, ILinearizableReads reads, MvccStore store, HeaderFactory headers, Quota quota, WatchHub hub, Lessor lessor, ServerOptions options)
{
    /// <summary>A write (or read-only) transaction, proposed with the auth context of the <paramref name="caller"/>.</summary>
    public async Task<TxnResponse> TxnAsync(TxnRequest request, InternalRequestHeader caller, CancellationToken cancellationToken)
    {
        Throw(RequestValidator.Check(request, options.MaxTxnOps));
        if (Applier.IsReadOnly(request))
        {
            await reads.WaitForReadIndexAsync(cancellationToken).ConfigureAwait(false);
            var (response, error) = Applier.ExecuteReadOnly(store, request);
            Throw(error);
            response!.Header = headers.Create(response.Header.Revision);
            return response;
        }

        await quota.EnsureRoomAsync(Quota.Cost(request), cancellationToken).ConfigureAwait(false);
        return (TxnResponse)await proposer.ProposeAsync(new InternalRequest { Txn = request, Header = caller.Clone() }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A linearizable range read.</summary>
    public async Task<RangeResponse> RangeAsync(RangeRequest request, CancellationToken cancellationToken)
    {
        Throw(RequestValidator.Check(request));
        await reads.WaitForReadIndexAsync(cancellationToken).ConfigureAwait(false);
        var (response, error) = RangeExecutor.Execute(store, request);
        Throw(error);
        response!.Header = headers.Create(response.Header.Revision);
        return response;
    }

    /// <summary>Deletes one key, with the auth context of the <paramref name="caller"/>.</summary>
    public async Task<DeleteRangeResponse> DeleteAsync(ByteString key, InternalRequestHeader caller, CancellationToken cancellationToken)
    {
        var request = new DeleteRangeRequest { Key = key };
        Throw(RequestValidator.Check(request));
        return (DeleteRangeResponse)await proposer.ProposeAsync(new InternalRequest { DeleteRange = request, Header = caller.Clone() }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Best-effort cleanup of a waiter's key after it gave up; a failure leaves the key to its lease.</summary>
    public async Task TryDeleteAsync(ByteString key, InternalRequestHeader caller)
    {
        try
        {
            await DeleteAsync(key, caller, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Grpc.Core.RpcException)
        {
            // No leader or quorum right now: the key goes when its lease expires.
        }
    }

    /// <summary>Grants a lease of <paramref name="ttl"/> seconds with an ID chosen here.</summary>
    public async Task<LeaseGrantResponse> GrantAsync(long ttl, CancellationToken cancellationToken)
    {
        var grant = lessor.PrepareGrant(new LeaseGrantRequest { TTL = ttl });
        return (LeaseGrantResponse)await proposer.ProposeAsync(new InternalRequest { LeaseGrant = grant }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Starts a watcher on this member's hub; read its responses with <see cref="LocalWatch.NextAsync"/>.</summary>
    public LocalWatch Watch(WatchCreateRequest request) => new(hub, headers, request);

    private static void Throw(EtcdError? error)
    {
        if (error is not null)
        {
            throw error.Exception();
        }
    }
}

/// <summary>One watcher on this member's hub, read in process (the created response is skipped).</summary>
public sealed class LocalWatch : IAsyncDisposable
{
    private readonly Channel<WatchResponse> _responses = Channel.CreateUnbounded<WatchResponse>(new UnboundedChannelOptions { SingleReader = true });
    private readonly WatchSession _session;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sendLoop;

    internal LocalWatch(WatchHub hub, HeaderFactory headers, WatchCreateRequest request)
    {
        _session = hub.OpenSession();
        _session.Create(request);
        _sendLoop = _session.RunSendLoopAsync(
            r =>
            {
                _responses.Writer.TryWrite(r);
                return Task.CompletedTask;
            },
            headers.Create,
            _stop.Token);
    }

    /// <summary>
    /// The next response with events. A watcher cancelled by the hub (its start revision was compacted) ends with
    /// etcd's "required revision has been compacted" error, as clientv3 reports it.
    /// </summary>
    public async Task<WatchResponse> NextAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var response = await _responses.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            if (response.Canceled)
            {
                throw (response.CompactRevision != 0 ? EtcdErrors.Compacted : EtcdErrors.WatchCanceled).Exception();
            }

            if (response.Events.Count > 0)
            {
                return response;
            }
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        _session.Dispose();
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _sendLoop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The send loop ends by cancellation.
        }

        _stop.Dispose();
    }
}
