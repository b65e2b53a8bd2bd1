using System.Buffers.Binary;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Storage;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Lease;

/// <summary>
/// Holds every lease: its TTL, its expiry (only on the leader; elsewhere leases never expire locally) and the keys
/// attached to it. State changes only by applying committed entries (<see cref="ILeaseApplier"/>), so every member
/// agrees; expiry is turned into a LeaseRevoke proposal by <see cref="LeaseExpiryLoop"/>, never a local delete.
/// Lease records persist in the store's "lease" side table in the same transaction as the key changes.
/// </summary>
public sealed partial class Lessor : ILeaseApplier, IStoreRestoredHandler, IDisposable
{
    /// <summary>The side-table bucket that holds lease records.</summary>
    public const string MetaBucket = "lease";

    private readonly Lock _lock = new();
    private readonly Dictionary<long, LeaseEntry> _leases = [];
    private readonly LessorOptions _options;
    private readonly TimeProvider _time;
    private readonly long _origin;
    private readonly ILogger _logger;
    private readonly LeaseIdGenerator _ids;
    private bool _primary;
    private CancellationTokenSource _demoted = new();

    /// <summary>Creates an empty lessor (call <see cref="Recover"/> before applying entries).</summary>
    public Lessor(LessorOptions options, TimeProvider time, ILogger<Lessor> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        _options = options;
        _time = time;
        _logger = logger;
        _origin = time.GetTimestamp();
        _ids = new LeaseIdGenerator(options.MemberId, time.GetUtcNow());
    }

    /// <summary>True while this member is the leader's lessor (leases have deadlines and may be renewed).</summary>
    public bool IsPrimary
    {
        get
        {
            lock (_lock)
            {
                return _primary;
            }
        }
    }

    /// <summary>Number of leases.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _leases.Count;
            }
        }
    }

    private TimeSpan Now => _time.GetElapsedTime(_origin);

    /// <summary>An ID for a grant that did not choose one (etcd picks it before proposing).</summary>
    public long NewLeaseId() => _ids.Next();

    /// <summary>
    /// The grant to propose for a client's request: an ID chosen here when the client left it 0, and a TTL below
    /// <see cref="LessorOptions.MinTtlSeconds"/> raised to it. The minimum depends on this member's
    /// --election-timeout, which members may set differently, so it is decided here, before proposing, and every
    /// member applies the TTL written in the entry.
    /// </summary>
    public LeaseGrantRequest PrepareGrant(LeaseGrantRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var grant = request.Clone();
        if (grant.ID == 0)
        {
            grant.ID = NewLeaseId();
        }

        if (grant.TTL < _options.MinTtlSeconds)
        {
            grant.TTL = _options.MinTtlSeconds;
        }

        return grant;
    }

    /// <summary>
    /// Rebuilds the leases from the store at start, before any later entry is applied: the persisted records, then the
    /// key attachments found by scanning the live keys.
    /// </summary>
    public void Recover(ILeaseRecoverySource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        lock (_lock)
        {
            _leases.Clear();
            foreach (var (key, value) in source.ReadLeaseRecords())
            {
                var (id, ttl, remaining) = DecodeRecord(key, value);
                _leases[id] = new LeaseEntry(id, ttl) { RemainingTtl = remaining };
            }

            var attached = 0;
            foreach (var (key, lease) in source.ReadLeasedKeys())
            {
                if (_leases.TryGetValue(lease, out var entry))
                {
                    entry.Keys.Add(key);
                    attached++;
                }
            }

            Log.Recovered(_logger, _leases.Count, attached);
        }
    }

    /// <summary>
    /// After a snapshot from the leader replaced the store's state: rebuilds the leases from it as at start. A primary
    /// (only followers install snapshots, but leadership may have moved meanwhile) gives them fresh deadlines.
    /// </summary>
    public void Reload(ILeaseRecoverySource source)
    {
        Recover(source);
        if (IsPrimary)
        {
            Promote(TimeSpan.Zero);
        }
    }

    /// <inheritdoc/>
    void IStoreRestoredHandler.OnStoreRestored(MvccStore store) => Reload(new MvccLeaseRecoverySource(store));

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_lock)
        {
            _demoted.Dispose();
        }
    }

    /// <inheritdoc/>
    public bool Exists(long leaseId)
    {
        lock (_lock)
        {
            return _leases.ContainsKey(leaseId);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyCollection<byte[]> KeysOf(long leaseId)
    {
        lock (_lock)
        {
            return _leases.TryGetValue(leaseId, out var lease) ? [.. lease.Keys] : [];
        }
    }

    /// <inheritdoc/>
    public void OnPut(byte[] key, long oldLease, long newLease)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (oldLease == newLease)
        {
            return;
        }

        lock (_lock)
        {
            if (oldLease != 0 && _leases.TryGetValue(oldLease, out var old))
            {
                old.Keys.Remove(key);
            }

            if (newLease != 0 && _leases.TryGetValue(newLease, out var lease))
            {
                lease.Keys.Add(key);
            }
        }
    }

    /// <inheritdoc/>
    public void OnDelete(byte[] key, long lease)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (lease == 0)
        {
            return;
        }

        lock (_lock)
        {
            if (_leases.TryGetValue(lease, out var entry))
            {
                entry.Keys.Remove(key);
            }
        }
    }

    /// <inheritdoc/>
    IMessage ILeaseApplier.ApplyGrant(LeaseGrantRequest request, MvccWriteTxn txn) => ApplyGrant(request, new MvccLeaseTxn(txn));

    /// <inheritdoc/>
    IMessage ILeaseApplier.ApplyRevoke(LeaseRevokeRequest request, MvccWriteTxn txn) => ApplyRevoke(request, new MvccLeaseTxn(txn));

    /// <inheritdoc/>
    void ILeaseApplier.ApplyCheckpoint(LeaseCheckpointRequest request, MvccWriteTxn txn) => ApplyCheckpoint(request, new MvccLeaseTxn(txn));

    /// <summary>
    /// Applies a committed checkpoint: each known lease's remaining TTL (0 = none, after a renewal) is recorded and
    /// persisted; it is what a future leader restarts the lease from. The current deadline is not changed (etcd).
    /// </summary>
    public void ApplyCheckpoint(LeaseCheckpointRequest request, ILeaseTxn txn)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(txn);
        foreach (var checkpoint in request.Checkpoints)
        {
            long ttl;
            lock (_lock)
            {
                if (!_leases.TryGetValue(checkpoint.ID, out var lease))
                {
                    continue;
                }

                lease.RemainingTtl = checkpoint.RemainingTTL;
                ttl = lease.Ttl;
                if (_primary)
                {
                    ScheduleCheckpoint(lease);
                }
            }

            txn.PutMeta(MetaBucket, EncodeKey(checkpoint.ID), EncodeValue(ttl, checkpoint.RemainingTTL));
        }
    }

    /// <summary>
    /// Applies a committed grant. Fails (without changing anything) with etcd's errors: ID 0 → lease not found,
    /// TTL above <see cref="LessorOptions.MaxLeaseTtl"/> → too large lease TTL, an existing ID → lease already exists.
    /// </summary>
    public LeaseGrantResponse ApplyGrant(LeaseGrantRequest request, ILeaseTxn txn)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(txn);
        if (request.ID == 0)
        {
            throw EtcdErrors.LeaseNotFound.Exception();
        }

        if (request.TTL > LessorOptions.MaxLeaseTtl)
        {
            throw EtcdErrors.LeaseTtlTooLarge.Exception();
        }

        LeaseEntry entry;
        lock (_lock)
        {
            if (_leases.ContainsKey(request.ID))
            {
                throw EtcdErrors.LeaseExist.Exception();
            }

            // PrepareGrant raised the TTL to its minimum (a local setting) before proposing; apply takes it as proposed.
            entry = new LeaseEntry(request.ID, request.TTL);
            if (_primary)
            {
                entry.Expiry = Now + TimeSpan.FromSeconds(entry.Ttl);
                ScheduleCheckpoint(entry);
            }

            _leases.Add(entry.Id, entry);
        }

        txn.PutMeta(MetaBucket, EncodeKey(entry.Id), EncodeValue(entry.Ttl, 0));
        return new LeaseGrantResponse
        {
            Header = new ResponseHeader { Revision = txn.Revision - 1 },
            ID = entry.Id,
            TTL = entry.Ttl,
        };
    }

    /// <summary>
    /// Applies a committed revoke: deletes the attached keys (sorted, so every member deletes in the same order) and
    /// the lease record in the same transaction, so they share one revision. Unknown ID → lease not found.
    /// </summary>
    public LeaseRevokeResponse ApplyRevoke(LeaseRevokeRequest request, ILeaseTxn txn)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(txn);
        LeaseEntry entry;
        byte[][] keys;
        lock (_lock)
        {
            if (!_leases.TryGetValue(request.ID, out entry!))
            {
                throw EtcdErrors.LeaseNotFound.Exception();
            }

            keys = [.. entry.Keys];
        }

        Array.Sort(keys, ByteKeyComparer.Instance);
        foreach (var key in keys)
        {
            txn.DeleteKey(key);
        }

        txn.DeleteMeta(MetaBucket, EncodeKey(entry.Id));
        lock (_lock)
        {
            _leases.Remove(entry.Id);
        }

        entry.Revoked.TrySetResult();
        Log.Revoked(_logger, entry.Id, keys.Length);
        return new LeaseRevokeResponse
        {
            Header = new ResponseHeader { Revision = txn.HasKeyChanges ? txn.Revision : txn.Revision - 1 },
        };
    }

    internal static byte[] EncodeKey(long id)
    {
        var key = new byte[8];
        BinaryPrimitives.WriteInt64BigEndian(key, id);
        return key;
    }

    internal static byte[] EncodeValue(long ttl, long remainingTtl)
    {
        // Record format v1: TTL (8 bytes, big endian), checkpointed remaining TTL (8 bytes, big endian).
        var value = new byte[16];
        BinaryPrimitives.WriteInt64BigEndian(value, ttl);
        BinaryPrimitives.WriteInt64BigEndian(value.AsSpan(8), remainingTtl);
        return value;
    }

    internal static (long Id, long Ttl, long RemainingTtl) DecodeRecord(byte[] key, byte[] value)
    {
        if (key.Length != 8 || value.Length < 16)
        {
            throw new InvalidDataException($"corrupt lease record (key {key.Length} bytes, value {value.Length} bytes)");
        }

        return (BinaryPrimitives.ReadInt64BigEndian(key), BinaryPrimitives.ReadInt64BigEndian(value),
            BinaryPrimitives.ReadInt64BigEndian(value.AsSpan(8)));
    }
}
