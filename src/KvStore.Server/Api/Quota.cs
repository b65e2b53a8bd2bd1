using Etcdserverpb;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Api;

/// <summary>
/// The backend quota (--quota-backend-bytes, default 2 GiB), checked before a request that adds data (put, txn with
/// puts, lease grant) is proposed, as etcd checks it: the quota and the store size are this member's own, so the check
/// never runs at apply time. A request that would grow the store past the quota is refused with "database space
/// exceeded", and the member proposes the NOSPACE alarm through the log; once applied, every member refuses the same
/// writes (see <see cref="Applier"/>). Writes proposed through other members can fill this member's store too, so
/// <see cref="QuotaMonitor"/> also checks after entries are applied, as etcd does. Costs estimate the bytes a request
/// adds, as etcd's quota does.
/// </summary>
public sealed class Quota
{
    private const long KeyValueOverhead = 256;
    private const long LeaseOverhead = 64;

    private readonly MvccStore _store;
    private readonly AlarmState _alarms;
    private readonly IProposer _proposer;
    private readonly ILogger<Quota> _logger;
    private readonly long _quotaBytes;
    private readonly ulong _memberId;

    public Quota(MvccStore store, AlarmState alarms, IProposer proposer, ServerOptions options, Identity.MemberIdentity identity, ILogger<Quota> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(identity);
        _store = store;
        _alarms = alarms;
        _proposer = proposer;
        _logger = logger;
        _quotaBytes = options.EffectiveQuotaBytes;
        _memberId = identity.MemberId;
    }

    /// <summary>The configured quota in bytes.</summary>
    public long QuotaBytes => _quotaBytes;

    /// <summary>
    /// True if a request adding <paramref name="cost"/> bytes fits. The size compared is the store's live data (every
    /// revision not yet compacted away): FasterKV keeps recent pages in memory, so the files on disk lag behind what
    /// was written, while live bytes grow with every write and shrink with compaction — as bolt's file does for etcd
    /// once defragmented.
    /// </summary>
    public bool Fits(long cost) => cost <= 0 || _store.DbSizeInUseBytes + cost <= _quotaBytes;

    /// <summary>True once the store's live data is past the quota (checked after entries are applied).</summary>
    public bool IsExceeded => _store.DbSizeInUseBytes > _quotaBytes;

    /// <summary>
    /// Returns if a request adding <paramref name="cost"/> bytes fits; otherwise proposes this member's NOSPACE alarm
    /// (<see cref="RaiseNoSpaceAsync"/>) and throws etcd's NOSPACE error.
    /// </summary>
    public async Task EnsureRoomAsync(long cost, CancellationToken cancellationToken)
    {
        if (Fits(cost))
        {
            return;
        }

        await RaiseNoSpaceAsync(cost, cancellationToken).ConfigureAwait(false);
        throw EtcdErrors.NoSpace.Exception();
    }

    /// <summary>
    /// Proposes this member's NOSPACE alarm through the log, unless the log already raised it. A failed proposal is
    /// not an error: the next write that does not fit, or the next check after an apply, proposes it again.
    /// </summary>
    public async Task RaiseNoSpaceAsync(long cost, CancellationToken cancellationToken)
    {
        if (_alarms.IsActive(_memberId, AlarmType.Nospace))
        {
            return;
        }

        Log.QuotaExceeded(_logger, _quotaBytes, _store.DbSizeInUseBytes, cost, EtcdLog.Id(_memberId));
        try
        {
            var alarm = new AlarmRequest { Action = AlarmRequest.Types.AlarmAction.Activate, MemberID = _memberId, Alarm = AlarmType.Nospace };
            await _proposer.ProposeAsync(new InternalRequest { Alarm = alarm }, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException)
        {
            // Not raised this time (no leader, timeout): retried on the next occasion.
        }
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
