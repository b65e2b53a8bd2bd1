using Etcdserverpb;
using KvStore.Storage;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// etcd's Range semantics over a read view: when sorting or filtering by revision everything is fetched, filtered,
/// sorted (a target other than KEY without an order sorts ascending) and only then cut to the limit; otherwise one
/// extra key is fetched to compute "more". Count is the number of matching keys before filters.
/// </summary>
public static class RangeExecutor
{
    /// <summary>Executes <paramref name="request"/>; the response header carries only the revision.</summary>
    public static (RangeResponse? Response, EtcdError? Error) Execute(IMvccReader reader, RangeRequest request, long headerRevision = -1)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(request);

        var sortOrder = request.SortOrder;
        var fetchAll = sortOrder != RangeRequest.Types.SortOrder.None
            || request.MinModRevision != 0 || request.MaxModRevision != 0
            || request.MinCreateRevision != 0 || request.MaxCreateRevision != 0;
        var limit = fetchAll ? 0 : request.Limit;
        if (limit > 0)
        {
            limit++;
        }

        var keysOnly = request.KeysOnly && request.SortTarget != RangeRequest.Types.SortTarget.Value;
        var options = new RangeOptions(Math.Max(0, request.Revision), limit, request.CountOnly, keysOnly);
        var result = reader.Range(request.Key.Span, request.RangeEnd.Span, options);
        var error = EtcdErrors.FromMvcc(result.Error);
        if (error is not null)
        {
            return (null, error);
        }

        IEnumerable<KeyValue> kvs = result.Kvs;
        if (request.MaxModRevision != 0)
        {
            var max = request.MaxModRevision;
            kvs = kvs.Where(kv => kv.ModRevision <= max);
        }

        if (request.MinModRevision != 0)
        {
            var min = request.MinModRevision;
            kvs = kvs.Where(kv => kv.ModRevision >= min);
        }

        if (request.MaxCreateRevision != 0)
        {
            var max = request.MaxCreateRevision;
            kvs = kvs.Where(kv => kv.CreateRevision <= max);
        }

        if (request.MinCreateRevision != 0)
        {
            var min = request.MinCreateRevision;
            kvs = kvs.Where(kv => kv.CreateRevision >= min);
        }

        if (request.SortTarget != RangeRequest.Types.SortTarget.Key && sortOrder == RangeRequest.Types.SortOrder.None)
        {
            sortOrder = RangeRequest.Types.SortOrder.Ascend;
        }

        if (sortOrder != RangeRequest.Types.SortOrder.None)
        {
            // Stable sorts: keys with equal targets keep their key order (as etcd's sort for small results).
            var descending = sortOrder == RangeRequest.Types.SortOrder.Descend;
            kvs = request.SortTarget switch
            {
                RangeRequest.Types.SortTarget.Version => Order(kvs, kv => kv.Version, descending),
                RangeRequest.Types.SortTarget.Create => Order(kvs, kv => kv.CreateRevision, descending),
                RangeRequest.Types.SortTarget.Mod => Order(kvs, kv => kv.ModRevision, descending),
                RangeRequest.Types.SortTarget.Value => descending
                    ? kvs.OrderByDescending(kv => kv.Value, ByteKeyComparer.Instance)
                    : kvs.OrderBy(kv => kv.Value, ByteKeyComparer.Instance),
                _ => descending ? kvs.OrderByDescending(kv => kv.Key, ByteKeyComparer.Instance) : kvs,
            };
        }

        var response = new RangeResponse
        {
            Header = new ResponseHeader { Revision = headerRevision >= 0 ? headerRevision : result.Revision },
            Count = result.Count,
        };
        var taken = 0;
        foreach (var kv in kvs)
        {
            if (request.Limit > 0 && taken == request.Limit)
            {
                response.More = true;
                break;
            }

            response.Kvs.Add(Convert.ToProto(kv, request.KeysOnly));
            taken++;
        }

        return (response, null);
    }

    private static IEnumerable<KeyValue> Order(IEnumerable<KeyValue> kvs, Func<KeyValue, long> key, bool descending) =>
        descending ? kvs.OrderByDescending(key) : kvs.OrderBy(key);
}
