using Etcdserverpb;
using KvStore.Server.Options;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// The backend quota (--quota-backend-bytes, default 2 GiB): a request that adds data (put, txn with puts, lease grant)
/// and would grow the store past the quota raises the NOSPACE alarm and is refused with "database space exceeded".
/// Costs estimate the bytes a request adds, as etcd's quota does.
/// </summary>
public sealed class Quota
{
    private const long KeyValueOverhead = 256;
    private const long LeaseOverhead = 64;

    private readonly MvccStore _store;
    private readonly AlarmState _alarms;
    private readonly long _quotaBytes;
    private readonly ulong _memberId;

    public Quota(MvccStore store, AlarmState alarms, ServerOptions options, Identity.MemberIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(identity);
        _store = store;
        _alarms = alarms;
        _quotaBytes = options.EffectiveQuotaBytes;
        _memberId = identity.MemberId;
    }

    /// <summary>The configured quota in bytes.</summary>
    public long QuotaBytes => _quotaBytes;

    /// <summary>
    /// True if a request adding <paramref name="cost"/> bytes fits; otherwise raises NOSPACE and returns false.
    /// The size compared is the store's live data (every revision not yet compacted away): FasterKV keeps recent pages in
    /// memory, so the files on disk lag behind what was written, while live bytes grow with every write and shrink with
    /// compaction — as bolt's file does for etcd once defragmented.
    /// </summary>
    public bool TryReserve(long cost)
    {
        if (cost <= 0 || _store.DbSizeInUseBytes + cost <= _quotaBytes)
        {
            return true;
        }

        _alarms.Activate(_memberId, AlarmType.Nospace);
        return false;
    }

    public static long Cost(PutRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return KeyValueOverhead + request.Key.Length + request.Value.Length;
    }

    public static long Cost(TxnRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return Math.Max(Cost(request.Success), Cost(request.Failure));
    }

    public static long Cost(LeaseGrantRequest request) => LeaseOverhead;

    private static long Cost(IEnumerable<RequestOp> ops) => ops.Sum(op => op.RequestCase switch
    {
        RequestOp.RequestOneofCase.RequestPut => Cost(op.RequestPut),
        RequestOp.RequestOneofCase.RequestTxn => Cost(op.RequestTxn),
        _ => 0L,
    });
}
