using System.Diagnostics;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Auth;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Apply;

/// <summary>
/// Applies committed entries to the MVCC store, one at a time, in log order, on the apply thread (etcd's applier).
/// Every entry records its index in the store (the consistent index) even when the request fails, and entries at or
/// below the store's consistent index are skipped, so replaying the WAL after a crash is harmless.
/// Requests are checked before anything is written, so a failing request leaves no partial state.
/// </summary>
public sealed partial class Applier
{
    private readonly MvccStore _store;
    private readonly ILeaseApplier _leases;
    private readonly IWatchEventSink _watch;
    private readonly HeaderFactory _headers;
    private readonly AlarmState _alarms;
    private readonly AuthStore _auth;
    private readonly ITokenProvider _tokens;
    private readonly ILogger _logger;

    // Made once: an instance method group becomes a new delegate at every conversion, here every applied entry.
    private readonly Func<long, IEnumerable<byte[]>> _leaseKeys;

    public Applier(MvccStore store, ILeaseApplier leases, IWatchEventSink watch, HeaderFactory headers, AlarmState alarms, AuthStore auth, ITokenProvider tokens, ILogger<Applier>? logger = null)
    {
        _logger = logger ?? NullLogger<Applier>.Instance;
        _store = store;
        _leases = leases;
        _leaseKeys = leases.KeysOf;
        _watch = watch;
        _headers = headers;
        _alarms = alarms;
        _auth = auth;
        _tokens = tokens;
    }

    /// <summary>Applies the entry at <paramref name="index"/>.</summary>
    public ApplyOutcome Apply(ulong index, InternalRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (index <= _store.ConsistentIndex)
        {
            return ApplyOutcome.Skipped;
        }

        // Auth management entries first (alarms do not refuse them), then the replicated alarms, then the permission
        // check of key writes against the replicated auth store.
        if (AuthStore.IsAuthRequest(request))
        {
            return ApplyAuth(index, request);
        }

        if (RefusedByAlarm(request) is { } refusal)
        {
            return RecordOnly(index, ApplyOutcome.Fail(refusal));
        }

        if (_auth.CheckApply(request, _leaseKeys) is { } denied)
        {
            return RecordOnly(index, ApplyOutcome.Fail(denied));
        }

        return request.RequestCase switch
        {
            InternalRequest.RequestOneofCase.Alarm => ApplyAlarm(index, request.Alarm),
            InternalRequest.RequestOneofCase.Put => ApplyPut(index, request.Put),
            InternalRequest.RequestOneofCase.DeleteRange => ApplyDelete(index, request.DeleteRange),
            InternalRequest.RequestOneofCase.Txn => ApplyTxn(index, request.Txn),
            InternalRequest.RequestOneofCase.Compaction => ApplyCompaction(index, request.Compaction),
            InternalRequest.RequestOneofCase.LeaseGrant => ApplyLease(index, request, isGrant: true),
            InternalRequest.RequestOneofCase.LeaseRevoke => ApplyLease(index, request, isGrant: false),
            InternalRequest.RequestOneofCase.LeaseCheckpoint => ApplyLeaseCheckpoint(index, request.LeaseCheckpoint),
            _ => RecordOnly(index, ApplyOutcome.Ok(new LeaseCheckpointResponse { Header = _headers.Create(_store.CurrentRevision) })),
        };
    }

    /// <summary>
    /// The refusal the cluster's alarms impose on a write, as etcd's capped and corrupt appliers: while CORRUPT is active
    /// every write fails with "corrupt cluster"; while NOSPACE is active a put, a txn that puts, and a lease grant fail
    /// with "database space exceeded" (deletes, compaction and revokes still free space). The alarms are replicated
    /// state (<see cref="AlarmState"/>), so every member refuses the same entries.
    /// </summary>
    private EtcdError? RefusedByAlarm(InternalRequest request)
    {
        var isWrite = request.RequestCase is InternalRequest.RequestOneofCase.Put or InternalRequest.RequestOneofCase.DeleteRange
            or InternalRequest.RequestOneofCase.Txn or InternalRequest.RequestOneofCase.Compaction
            or InternalRequest.RequestOneofCase.LeaseGrant or InternalRequest.RequestOneofCase.LeaseRevoke;
        if (isWrite && _alarms.Corrupt)
        {
            return EtcdErrors.Corrupt;
        }

        var addsData = request.RequestCase switch
        {
            InternalRequest.RequestOneofCase.Put or InternalRequest.RequestOneofCase.LeaseGrant => true,
            InternalRequest.RequestOneofCase.Txn => HasPut(request.Txn),
            _ => false,
        };
        return addsData && _alarms.NoSpace ? EtcdErrors.NoSpace : null;
    }

    private ApplyOutcome ApplyAlarm(ulong index, AlarmRequest request)
    {
        var wasActive = _alarms.IsActive(request.MemberID, request.Alarm);
        using var txn = _store.BeginWrite(index);
        var outcome = Finish(txn, ApplyOutcome.Ok(_alarms.Apply(request, txn)));
        LogAlarmChange(request, wasActive);
        return outcome;
    }

    /// <summary>etcd's "alarm raised" / "alarm disarmed" warnings, once per change of an alarm.</summary>
    private void LogAlarmChange(AlarmRequest request, bool wasActive)
    {
        var isActive = _alarms.IsActive(request.MemberID, request.Alarm);
        if (isActive != wasActive)
        {
            EtcdLog.Warn(_logger, isActive ? "alarm raised" : "alarm disarmed", ("alarm", request.Alarm.ToString().ToUpperInvariant()), ("from", EtcdLog.Id(request.MemberID)));
        }
    }

    private ApplyOutcome ApplyPut(ulong index, PutRequest request)
    {
        using var txn = _store.BeginWrite(index);
        var error = CheckPut(txn, request);
        if (error is not null)
        {
            return Finish(txn, ApplyOutcome.Fail(error));
        }

        var response = Put(txn, request);
        response.Header = _headers.Create(txn.Revision);
        return Finish(txn, ApplyOutcome.Ok(response));
    }

    private ApplyOutcome ApplyDelete(ulong index, DeleteRangeRequest request)
    {
        using var txn = _store.BeginWrite(index);
        var response = Delete(txn, request);
        response.Header = _headers.Create(response.Header.Revision);
        return Finish(txn, ApplyOutcome.Ok(response));
    }

    private ApplyOutcome ApplyCompaction(ulong index, CompactionRequest request)
    {
        // MvccStore.Compact follows etcd's rules, including Compact(0) on a never-compacted store (a successful no-op).
        var started = Stopwatch.GetTimestamp();
        var result = _store.Compact(request.Revision);
        var error = EtcdErrors.FromMvcc(result.Error);
        if (error is null && result.CompactRevision > 0)
        {
            LogCompaction(result.CompactRevision, started);
        }

        var outcome = error is not null
            ? ApplyOutcome.Fail(error)
            : ApplyOutcome.Ok(new CompactionResponse { Header = _headers.Create(_store.CurrentRevision) });
        return RecordOnly(index, outcome);
    }

    /// <summary>etcd's compaction lines: the index compaction now, the end of the physical removal when it completes.</summary>
    private void LogCompaction(long revision, long started)
    {
        EtcdLog.Info(_logger, "compact tree index", ("revision", revision));
        _ = _store.PhysicalCompactionDone(revision).ContinueWith(
            (_, state) => EtcdLog.Info(
                (ILogger)state!,
                "finished scheduled compaction",
                ("compact-revision", revision),
                ("took", EtcdLog.Duration(Stopwatch.GetElapsedTime(started)))),
            _logger,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    private ApplyOutcome ApplyLease(ulong index, InternalRequest request, bool isGrant)
    {
        using var txn = _store.BeginWrite(index);
        IMessage response;
        try
        {
            response = isGrant ? _leases.ApplyGrant(request.LeaseGrant, txn) : _leases.ApplyRevoke(request.LeaseRevoke, txn);
        }
        catch (EtcdException e)
        {
            return Finish(txn, ApplyOutcome.Fail(new EtcdError(e.Code, e.Detail)));
        }

        var revision = txn.Changes.Count > 0 ? txn.Revision : txn.Revision - 1;
        switch (response)
        {
            case LeaseGrantResponse grant:
                grant.Header = _headers.Create(revision);
                break;
            case LeaseRevokeResponse revoke:
                revoke.Header = _headers.Create(revision);
                break;
        }

        return Finish(txn, ApplyOutcome.Ok(response));
    }

    private ApplyOutcome ApplyLeaseCheckpoint(ulong index, LeaseCheckpointRequest request)
    {
        // Remaining TTLs go into the lease records in the same transaction as the consistent index.
        using var txn = _store.BeginWrite(index);
        _leases.ApplyCheckpoint(request, txn);
        return Finish(txn, ApplyOutcome.Ok(new LeaseCheckpointResponse { Header = _headers.Create(_store.CurrentRevision) }));
    }

    private ApplyOutcome ApplyAuth(ulong index, InternalRequest request)
    {
        using var txn = _store.BeginWrite(index);
        var (response, error) = _auth.Apply(txn, request, _tokens);
        txn.Commit();
        return error is not null ? ApplyOutcome.Fail(error) : ApplyOutcome.Ok(response!);
    }

    /// <summary>Records the index for an entry that changed nothing in the KV space.</summary>
    private ApplyOutcome RecordOnly(ulong index, ApplyOutcome outcome)
    {
        using var txn = _store.BeginWrite(index);
        txn.Commit();
        return outcome;
    }

    /// <summary>Commits (always: the consistent index advances even for failed requests) and tells watchers.</summary>
    private ApplyOutcome Finish(MvccWriteTxn txn, ApplyOutcome outcome)
    {
        var changes = txn.Changes;
        var revision = txn.Revision;
        txn.Commit();
        if (changes.Count > 0)
        {
            _watch.OnCommitted(revision, changes);
        }

        return outcome;
    }

    private EtcdError? CheckPut(IMvccReader reader, PutRequest request)
    {
        if (request.Lease != 0 && !_leases.Exists(request.Lease))
        {
            return EtcdErrors.LeaseNotFound;
        }

        if ((request.IgnoreValue || request.IgnoreLease) && Get(reader, request.Key) is null)
        {
            return EtcdErrors.KeyNotFound;
        }

        return null;
    }

    /// <summary>A checked put (see <see cref="CheckPut"/>); the header carries only the revision.</summary>
    private PutResponse Put(MvccWriteTxn txn, PutRequest request)
    {
        var response = new PutResponse();
        var key = Convert.ToStored(request.Key);
        var current = request.PrevKv || request.IgnoreValue || request.IgnoreLease ? Get(txn, request.Key) : null;
        var value = request.IgnoreValue ? current!.Value : Convert.ToStored(request.Value);
        var lease = request.IgnoreLease ? current!.Lease : request.Lease;
        var oldLease = txn.Put(key, value, lease);
        if (request.PrevKv && current is not null)
        {
            response.PrevKv = Convert.ToProto(current);
        }

        if (oldLease != 0 || lease != 0)
        {
            _leases.OnPut(key, oldLease, lease);
        }

        response.Header = new ResponseHeader { Revision = txn.Revision };
        return response;
    }

    /// <summary>A delete; the header carries only the revision.</summary>
    private DeleteRangeResponse Delete(MvccWriteTxn txn, DeleteRangeRequest request)
    {
        var deleted = txn.DeleteRange(request.Key.Span, request.RangeEnd.Span);
        var response = new DeleteRangeResponse { Deleted = deleted.Count };
        foreach (var kv in deleted)
        {
            if (request.PrevKv)
            {
                response.PrevKvs.Add(Convert.ToProto(kv));
            }

            if (kv.Lease != 0)
            {
                _leases.OnDelete(kv.Key, kv.Lease);
            }
        }

        response.Header = new ResponseHeader { Revision = txn.Changes.Count > 0 ? txn.Revision : txn.Revision - 1 };
        return response;
    }

    private static KeyValue? Get(IMvccReader reader, ByteString key)
    {
        var result = reader.Range(key.Span, [], default);
        return result.Kvs.Count > 0 ? result.Kvs[0] : null;
    }
}
