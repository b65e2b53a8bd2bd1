using Etcdserverpb;
using Google.Protobuf;

namespace KvStore.Server.Api;

/// <summary>
/// Checks a client request before it is proposed (etcd's rules): non-empty keys, ignore_value/ignore_lease without a
/// value/lease, at most --max-txn-ops operations per txn level, and no key written twice in one txn branch.
/// Returns the error to send, or null.
/// </summary>
public static class RequestValidator
{
    public static EtcdError? Check(RangeRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Key.IsEmpty ? EtcdErrors.EmptyKey : null;
    }

    public static EtcdError? Check(PutRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Key.IsEmpty)
        {
            return EtcdErrors.EmptyKey;
        }

        if (request.IgnoreValue && !request.Value.IsEmpty)
        {
            return EtcdErrors.ValueProvided;
        }

        return request.IgnoreLease && request.Lease != 0 ? EtcdErrors.LeaseProvided : null;
    }

    public static EtcdError? Check(DeleteRangeRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Key.IsEmpty ? EtcdErrors.EmptyKey : null;
    }

    public static EtcdError? Check(TxnRequest request, long maxTxnOps)
    {
        ArgumentNullException.ThrowIfNull(request);
        var error = CheckTxn(request, maxTxnOps);
        if (error is not null)
        {
            return error;
        }

        // Overlap checks come after the size checks (they are quadratic in the worst case).
        return DuplicateKeys.Check(request.Success) ?? DuplicateKeys.Check(request.Failure);
    }

    private static EtcdError? CheckTxn(TxnRequest request, long maxTxnOps)
    {
        long ops = Math.Max(request.Compare.Count, Math.Max(request.Success.Count, request.Failure.Count));
        if (ops > maxTxnOps)
        {
            return EtcdErrors.TooManyOps;
        }

        foreach (var compare in request.Compare)
        {
            if (compare.Key.IsEmpty)
            {
                return EtcdErrors.EmptyKey;
            }
        }

        foreach (var op in request.Success)
        {
            var error = CheckOp(op, maxTxnOps - ops);
            if (error is not null)
            {
                return error;
            }
        }

        foreach (var op in request.Failure)
        {
            var error = CheckOp(op, maxTxnOps - ops);
            if (error is not null)
            {
                return error;
            }
        }

        return null;
    }

    private static EtcdError? CheckOp(RequestOp op, long maxTxnOps) => op.RequestCase switch
    {
        RequestOp.RequestOneofCase.RequestRange => Check(op.RequestRange),
        RequestOp.RequestOneofCase.RequestPut => Check(op.RequestPut),
        RequestOp.RequestOneofCase.RequestDeleteRange => Check(op.RequestDeleteRange),
        RequestOp.RequestOneofCase.RequestTxn => CheckTxn(op.RequestTxn, maxTxnOps),
        _ => EtcdErrors.KeyNotFound,
    };

    /// <summary>
    /// etcd's overlap rule: within one branch (recursively through nested txns) a key may be put once and must not be
    /// both put and deleted; a nested txn's then/else branches may put the same key (they exclude each other).
    /// Intervals compare as strings where an empty end means +infinity.
    /// </summary>
    private static class DuplicateKeys
    {
        public static EtcdError? Check(IList<RequestOp> ops) => Collect(ops, out _, out _);

        private static EtcdError? Collect(IList<RequestOp> ops, out HashSet<ByteString> puts, out List<Interval> deletes)
        {
            deletes = [];
            puts = [];
            foreach (var op in ops)
            {
                if (op.RequestCase == RequestOp.RequestOneofCase.RequestDeleteRange)
                {
                    var d = op.RequestDeleteRange;
                    deletes.Add(d.RangeEnd.IsEmpty ? Interval.Point(d.Key) : new Interval(d.Key.ToByteArray(), d.RangeEnd.ToByteArray()));
                }
            }

            foreach (var op in ops)
            {
                if (op.RequestCase != RequestOp.RequestOneofCase.RequestTxn)
                {
                    continue;
                }

                var error = Collect(op.RequestTxn.Success, out var putsThen, out var deletesThen);
                if (error is not null)
                {
                    return error;
                }

                error = Collect(op.RequestTxn.Failure, out var putsElse, out var deletesElse);
                if (error is not null)
                {
                    return error;
                }

                foreach (var key in putsThen)
                {
                    if (puts.Contains(key) || Intersects(deletes, key))
                    {
                        return EtcdErrors.DuplicateKey;
                    }

                    puts.Add(key);
                }

                foreach (var key in putsElse)
                {
                    if ((puts.Contains(key) && !putsThen.Contains(key)) || Intersects(deletes, key))
                    {
                        return EtcdErrors.DuplicateKey;
                    }

                    puts.Add(key);
                }

                // Only intervals that reach past "\0" survive etcd's union step.
                deletes.AddRange(deletesThen.Where(i => Interval.Compare(i.End, [0]) > 0));
                deletes.AddRange(deletesElse.Where(i => Interval.Compare(i.End, [0]) > 0));
            }

            foreach (var op in ops)
            {
                if (op.RequestCase != RequestOp.RequestOneofCase.RequestPut)
                {
                    continue;
                }

                var key = op.RequestPut.Key;
                if (puts.Contains(key) || Intersects(deletes, key))
                {
                    return EtcdErrors.DuplicateKey;
                }

                puts.Add(key);
            }

            return null;
        }

        private static bool Intersects(List<Interval> deletes, ByteString key)
        {
            if (deletes.Count == 0)
            {
                return false;
            }

            var point = Interval.Point(key);
            foreach (var interval in deletes)
            {
                if (interval.Overlaps(point))
                {
                    return true;
                }
            }

            return false;
        }
    }

    private sealed record Interval(byte[] Begin, byte[] End)
    {
        public static Interval Point(ByteString key)
        {
            var begin = key.ToByteArray();
            var end = new byte[begin.Length + 1];
            begin.CopyTo(end, 0);
            return new Interval(begin, end);
        }

        public bool Overlaps(Interval other) => Compare(Begin, other.End) < 0 && Compare(End, other.Begin) > 0;

        /// <summary>Byte-wise comparison where the empty string is greater than every other string.</summary>
        public static int Compare(byte[] a, byte[] b)
        {
            if (a.Length == 0)
            {
                return b.Length == 0 ? 0 : 1;
            }

            return b.Length == 0 ? -1 : a.AsSpan().SequenceCompareTo(b);
        }
    }
}
