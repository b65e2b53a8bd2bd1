using Etcdserverpb;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// Transactions, as etcd runs them: first every compare of the whole txn tree is evaluated against the state before
/// the txn (the "path": one bool per txn, pre-order), then the chosen operations are checked (lease exists, key exists
/// for ignore_value/ignore_lease, range revisions servable), and only then applied — all in one write transaction,
/// so a write txn gets exactly one revision. Inner responses carry headers with only the revision.
/// </summary>
public sealed partial class Applier
{
    /// <summary>True if no branch of the txn (recursively) writes.</summary>
    public static bool IsReadOnly(TxnRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return AllReads(request.Success) && AllReads(request.Failure);

        static bool AllReads(IEnumerable<RequestOp> ops) => ops.All(op => op.RequestCase switch
        {
            RequestOp.RequestOneofCase.RequestRange => true,
            RequestOp.RequestOneofCase.RequestTxn => IsReadOnly(op.RequestTxn),
            _ => false,
        });
    }

    /// <summary>True if the txn (recursively, either branch) contains a put (it adds data: refused under NOSPACE).</summary>
    public static bool HasPut(TxnRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Success.Concat(request.Failure).Any(op => op.RequestCase switch
        {
            RequestOp.RequestOneofCase.RequestPut => true,
            RequestOp.RequestOneofCase.RequestTxn => HasPut(op.RequestTxn),
            _ => false,
        });
    }

    /// <summary>
    /// Runs a read-only txn against the committed store, all reads at one revision (a consistent snapshot even while
    /// the applier commits). Any thread.
    /// </summary>
    public static (TxnResponse? Response, EtcdError? Error) ExecuteReadOnly(IMvccReader store, TxnRequest request)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(request);
        var reader = new SnapshotReader(store, store.CurrentRevision);
        var path = new List<bool>();
        ComputePath(reader, request, path);
        var cursor = 0;
        var error = CheckRanges(reader, request, path, ref cursor);
        if (error is not null)
        {
            return (null, error);
        }

        cursor = 0;
        var response = new TxnResponse();
        error = RunReads(reader, request, path, ref cursor, response);
        if (error is not null)
        {
            return (null, error);
        }

        response.Header = new ResponseHeader { Revision = reader.Revision };
        return (response, null);
    }

    private ApplyOutcome ApplyTxn(ulong index, TxnRequest request)
    {
        using var txn = _store.BeginWrite(index);
        var path = new List<bool>();
        ComputePath(txn, request, path);

        var cursor = 0;
        var error = CheckPuts(txn, request, path, ref cursor);
        if (error is null)
        {
            cursor = 0;
            error = CheckRanges(txn, request, path, ref cursor);
        }

        if (error is not null)
        {
            return Finish(txn, ApplyOutcome.Fail(error));
        }

        cursor = 0;
        var response = new TxnResponse();
        RunWrites(txn, request, path, ref cursor, response);
        response.Header = _headers.Create(txn.Changes.Count > 0 ? txn.Revision : txn.Revision - 1);
        return Finish(txn, ApplyOutcome.Ok(response));
    }

    private static void ComputePath(IMvccReader reader, TxnRequest request, List<bool> path)
    {
        var succeeded = request.Compare.All(c => Compares.Evaluate(reader, c));
        path.Add(succeeded);
        foreach (var op in succeeded ? request.Success : request.Failure)
        {
            if (op.RequestCase == RequestOp.RequestOneofCase.RequestTxn)
            {
                ComputePath(reader, op.RequestTxn, path);
            }
        }
    }

    private EtcdError? CheckPuts(IMvccReader reader, TxnRequest request, List<bool> path, ref int cursor)
    {
        var ops = path[cursor++] ? request.Success : request.Failure;
        foreach (var op in ops)
        {
            var error = op.RequestCase switch
            {
                RequestOp.RequestOneofCase.RequestTxn => CheckPuts(reader, op.RequestTxn, path, ref cursor),
                RequestOp.RequestOneofCase.RequestPut => CheckPut(reader, op.RequestPut),
                _ => null,
            };
            if (error is not null)
            {
                return error;
            }
        }

        return null;
    }

    private static EtcdError? CheckRanges(IMvccReader reader, TxnRequest request, List<bool> path, ref int cursor)
    {
        var ops = path[cursor++] ? request.Success : request.Failure;
        foreach (var op in ops)
        {
            EtcdError? error = null;
            if (op.RequestCase == RequestOp.RequestOneofCase.RequestTxn)
            {
                error = CheckRanges(reader, op.RequestTxn, path, ref cursor);
            }
            else if (op.RequestCase == RequestOp.RequestOneofCase.RequestRange)
            {
                var revision = op.RequestRange.Revision;
                if (revision > 0 && revision > reader.CurrentRevision)
                {
                    error = EtcdErrors.FutureRevision;
                }
                else if (revision > 0 && revision < reader.CompactRevision)
                {
                    error = EtcdErrors.Compacted;
                }
            }

            if (error is not null)
            {
                return error;
            }
        }

        return null;
    }

    private static EtcdError? RunReads(SnapshotReader reader, TxnRequest request, List<bool> path, ref int cursor, TxnResponse response)
    {
        var succeeded = path[cursor++];
        response.Succeeded = succeeded;
        foreach (var op in succeeded ? request.Success : request.Failure)
        {
            if (op.RequestCase == RequestOp.RequestOneofCase.RequestTxn)
            {
                var inner = new TxnResponse();
                var error = RunReads(reader, op.RequestTxn, path, ref cursor, inner);
                if (error is not null)
                {
                    return error;
                }

                inner.Header = new ResponseHeader { Revision = reader.Revision };
                response.Responses.Add(new ResponseOp { ResponseTxn = inner });
            }
            else if (op.RequestCase == RequestOp.RequestOneofCase.RequestRange)
            {
                var (range, error) = RangeExecutor.Execute(reader, op.RequestRange, reader.Revision);
                if (error is not null)
                {
                    return error;
                }

                response.Responses.Add(new ResponseOp { ResponseRange = range });
            }
        }

        return null;
    }

    private void RunWrites(MvccWriteTxn txn, TxnRequest request, List<bool> path, ref int cursor, TxnResponse response)
    {
        var succeeded = path[cursor++];
        response.Succeeded = succeeded;
        foreach (var op in succeeded ? request.Success : request.Failure)
        {
            switch (op.RequestCase)
            {
                case RequestOp.RequestOneofCase.RequestRange:
                {
                    var current = txn.Changes.Count > 0 ? txn.Revision : txn.Revision - 1;
                    var (range, error) = RangeExecutor.Execute(txn, op.RequestRange, current);
                    if (error is not null)
                    {
                        // Checked before any write; reaching this is a storage bug.
                        throw new InvalidOperationException($"range inside a txn failed after its checks passed: {error.Message}");
                    }

                    response.Responses.Add(new ResponseOp { ResponseRange = range });
                    break;
                }

                case RequestOp.RequestOneofCase.RequestPut:
                    response.Responses.Add(new ResponseOp { ResponsePut = Put(txn, op.RequestPut) });
                    break;
                case RequestOp.RequestOneofCase.RequestDeleteRange:
                    response.Responses.Add(new ResponseOp { ResponseDeleteRange = Delete(txn, op.RequestDeleteRange) });
                    break;
                case RequestOp.RequestOneofCase.RequestTxn:
                {
                    var inner = new TxnResponse();
                    RunWrites(txn, op.RequestTxn, path, ref cursor, inner);
                    inner.Header = new ResponseHeader { Revision = txn.Changes.Count > 0 ? txn.Revision : txn.Revision - 1 };
                    response.Responses.Add(new ResponseOp { ResponseTxn = inner });
                    break;
                }

                default:
                    response.Responses.Add(new ResponseOp());
                    break;
            }
        }
    }

    /// <summary>A read view pinned at one revision: reads at revision 0 read at <see cref="Revision"/>.</summary>
    private sealed class SnapshotReader : IMvccReader
    {
        private readonly IMvccReader _inner;

        public SnapshotReader(IMvccReader inner, long revision)
        {
            _inner = inner;
            Revision = revision;
        }

        public long Revision { get; }

        public long CurrentRevision => Revision;

        public long CompactRevision => _inner.CompactRevision;

        public RangeResult Range(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, RangeOptions options) =>
            _inner.Range(key, rangeEnd, options.Revision <= 0 ? options with { Revision = Revision } : options);
    }
}
