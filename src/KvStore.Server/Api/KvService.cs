using Etcdserverpb;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Api;

/// <summary>
/// etcd's KV service. Thin: validate, then writes are proposed (and answered once durable and applied), reads are
/// served from the store — linearizable ones after the read barrier, serializable ones at once.
/// </summary>
public sealed class KvService : KV.KVBase
{
    private readonly RaftHost _node;
    private readonly MvccStore _store;
    private readonly HeaderFactory _headers;
    private readonly Quota _quota;
    private readonly long _maxTxnOps;

    public KvService(RaftHost node, MvccStore store, HeaderFactory headers, Quota quota, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _node = node;
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
            await _node.WaitForReadIndexAsync(context.CancellationToken);
        }

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
        return (PutResponse)await _node.ProposeAsync(new InternalRequest { Put = request }, context.CancellationToken);
    }

    public override async Task<DeleteRangeResponse> DeleteRange(DeleteRangeRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Throw(RequestValidator.Check(request));
        return (DeleteRangeResponse)await _node.ProposeAsync(new InternalRequest { DeleteRange = request }, context.CancellationToken);
    }

    public override async Task<TxnResponse> Txn(TxnRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Throw(RequestValidator.Check(request, _maxTxnOps));
        if (Applier.IsReadOnly(request))
        {
            if (!IsSerializable(request))
            {
                await _node.WaitForReadIndexAsync(context.CancellationToken);
            }

            var (response, error) = Applier.ExecuteReadOnly(_store, request);
            Throw(error);
            response!.Header = _headers.Create(response.Header.Revision);
            return response;
        }

        await _quota.EnsureRoomAsync(Quota.Cost(request), context.CancellationToken);
        return (TxnResponse)await _node.ProposeAsync(new InternalRequest { Txn = request }, context.CancellationToken);
    }

    public override async Task<CompactionResponse> Compact(CompactionRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var response = (CompactionResponse)await _node.ProposeAsync(new InternalRequest { Compaction = request }, context.CancellationToken);
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
