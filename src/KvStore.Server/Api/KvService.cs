using Etcdserverpb;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Auth;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Api;

/// <summary>
/// etcd's KV service. Thin: validate, then writes are proposed (and answered once durable and applied), reads are
/// served from the store — linearizable ones after the read barrier, serializable ones at once.
/// </summary>
public sealed class KvService : KV.KVBase
{
    private readonly IProposer _proposer;
    private readonly ILinearizableReads _reads;
    private readonly MvccStore _store;
    private readonly HeaderFactory _headers;
    private readonly Quota _quota;
    private readonly long _maxTxnOps;
    private readonly RequestAuthenticator _auth;
    private readonly AuthStore _authStore;

    public KvService(IProposer proposer, ILinearizableReads reads, MvccStore store, HeaderFactory headers, Quota quota, ServerOptions options, RequestAuthenticator auth, AuthStore authStore)
    {
        ArgumentNullException.ThrowIfNull(options);
        _auth = auth;
        _authStore = authStore;
        _proposer = proposer;
        _reads = reads;
        _store = store;
        _headers = headers;
        _quota = quota;
        _maxTxnOps = options.MaxTxnOps;
    }

    public override async Task<RangeResponse> Range(RangeRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Throw(RequestValidator.Check(request));
        if (!request.Serializable)
        {
            await _reads.WaitForReadIndexAsync(context.CancellationToken);
        }

        // Reads are checked here, by the member that serves them (writes are checked when applied).
        _auth.RequireRange(context, request.Key.Span, request.RangeEnd.Span);
        var (response, error) = RangeExecutor.Execute(_store, request);
        Throw(error);
        response!.Header = _headers.Create(response.Header.Revision);
        return response;
    }

    public override async Task<PutResponse> Put(PutRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Throw(RequestValidator.Check(request));
        await _quota.EnsureRoomAsync(Quota.Cost(request), context.CancellationToken);
        return (PutResponse)await _proposer.ProposeAsync(new InternalRequest { Put = request, Header = _auth.Header(context) }, context.CancellationToken);
    }

    public override async Task<DeleteRangeResponse> DeleteRange(DeleteRangeRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Throw(RequestValidator.Check(request));
        return (DeleteRangeResponse)await _proposer.ProposeAsync(new InternalRequest { DeleteRange = request, Header = _auth.Header(context) }, context.CancellationToken);
    }

    public override async Task<TxnResponse> Txn(TxnRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Throw(RequestValidator.Check(request, _maxTxnOps));
        if (Applier.IsReadOnly(request))
        {
            if (!IsSerializable(request))
            {
                await _reads.WaitForReadIndexAsync(context.CancellationToken);
            }

            Throw(_authStore.CheckTxn(_auth.Resolve(context), request));
            var (response, error) = Applier.ExecuteReadOnly(_store, request);
            Throw(error);
            response!.Header = _headers.Create(response.Header.Revision);
            return response;
        }

        await _quota.EnsureRoomAsync(Quota.Cost(request), context.CancellationToken);
        return (TxnResponse)await _proposer.ProposeAsync(new InternalRequest { Txn = request, Header = _auth.Header(context) }, context.CancellationToken);
    }

    public override async Task<CompactionResponse> Compact(CompactionRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var response = (CompactionResponse)await _proposer.ProposeAsync(new InternalRequest { Compaction = request }, context.CancellationToken);
        if (request.Physical)
        {
            await _store.PhysicalCompactionDone(request.Revision).WaitAsync(context.CancellationToken);
        }

        return response;
    }

    /// <summary>A read-only txn is serializable when every range in it is.</summary>
    private static bool IsSerializable(TxnRequest request) => request.Success.Concat(request.Failure).All(op => op.RequestCase switch
    {
        RequestOp.RequestOneofCase.RequestRange => op.RequestRange.Serializable,
        RequestOp.RequestOneofCase.RequestTxn => IsSerializable(op.RequestTxn),
        _ => true,
    });

    private static void Throw(EtcdError? error)
    {
        if (error is not null)
        {
            throw error.Exception();
        }
    }
}
