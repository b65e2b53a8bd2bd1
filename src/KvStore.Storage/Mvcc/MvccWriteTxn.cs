using System.Buffers;
using KvStore.Storage.Backend;

namespace KvStore.Storage.Mvcc;

/// <summary>
/// A write transaction: one main revision (<see cref="Revision"/> = CurrentRevision + 1), a sub revision per
/// change. Changes go to FasterKV and the key index immediately (at a revision readers cannot see yet);
/// <see cref="Commit"/> publishes the revision and records the consistent index. Changes cannot be rolled
/// back: Dispose without Commit commits what was changed.
/// </summary>
public sealed class MvccWriteTxn : IMvccReader, IDisposable
{
    private readonly MvccStore _store;
    private readonly List<MvccEvent> _changes = [];
    private bool _finished;
    private bool _closed;

    internal MvccWriteTxn(MvccStore store, ulong index, long revision, bool alreadyApplied)
    {
        _store = store;
        Index = index;
        Revision = revision;
        IsAlreadyApplied = alreadyApplied;
    }

    /// <summary>The raft/WAL index this txn applies.</summary>
    public ulong Index { get; }

    /// <summary>The main revision this txn writes at.</summary>
    public long Revision { get; }

    /// <summary>True when BeginWrite's index was &lt;= ConsistentIndex: the entry was applied before, skip it.</summary>
    public bool IsAlreadyApplied { get; }

    /// <summary>The txn's view: its own revision once it changed something, else the store's.</summary>
    public long CurrentRevision => _changes.Count > 0 ? Revision : _store.CurrentRevision;

    public long CompactRevision => _store.CompactRevision;

    public IReadOnlyList<MvccEvent> Changes => _changes;

    public RangeResult Range(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, RangeOptions options) =>
        _store.RangeCore(_store.WriterSession, key, rangeEnd, options, CurrentRevision);

    /// <summary>
    /// Puts key at this txn's revision. The new version and create revision come from the key index, as etcd takes
    /// them, so the previous value is not read; a caller that needs it (prev_kv) reads it first.
    /// </summary>
    /// <returns>The lease the key was attached to before this put (0 when it had none or did not exist).</returns>
    public long Put(byte[] key, byte[] value, long lease)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        EnsureWritable();
        var ki = _store.GetOrAddKeyIndex(key);
        var existed = ki.TryGet(CurrentRevision, out _, out var created, out var previousVersion);
        var previousLease = existed ? ki.Lease : 0;
        var rev = new Revision(Revision, _changes.Count);
        var create = existed ? created : Revision;
        var version = previousVersion + 1;

        var size = 1 + KeyValueCodec.MaxSize(key.Length, value.Length) + FasterBackend.ChecksumLength;
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            buffer[0] = MvccStore.FlagPut;
            var length = 1 + KeyValueCodec.Encode(buffer.AsSpan(1), key, create, Revision, version, value, lease);
            Span<byte> rk = stackalloc byte[17];
            MvccStore.WriteRevisionKey(rk, rev);
            FasterBackend.Upsert(_store.WriterSession, rk, buffer, length);
            _store.AddLiveBytes(length + 17);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        _store.MutateIndex(() => ki.Put(rev, lease));
        _changes.Add(new MvccEvent(EventType.Put, new KeyValue
        {
            Key = key,
            Value = value,
            CreateRevision = create,
            ModRevision = Revision,
            Version = version,
            Lease = lease,
        }));
        return previousLease;
    }

    public IReadOnlyList<KeyValue> DeleteRange(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd)
    {
        EnsureWritable();
        var deleted = new List<KeyValue>();
        var view = CurrentRevision;
        Span<byte> rk = stackalloc byte[17];
        foreach (var ki in _store.SnapshotRange(key.ToArray(), rangeEnd.ToArray()))
        {
            if (!ki.TryGet(view, out _, out _, out _))
            {
                continue;
            }

            var prev = ReadVisible(ki)!;
            var rev = new Revision(Revision, _changes.Count);
            var tomb = new byte[1 + KeyValueCodec.MaxSize(ki.Key.Length, 0) + FasterBackend.ChecksumLength];
            tomb[0] = MvccStore.FlagTombstone;
            var length = 1 + KeyValueCodec.Encode(tomb.AsSpan(1), ki.Key, 0, 0, 0, [], 0);
            MvccStore.WriteRevisionKey(rk, rev);
            FasterBackend.Upsert(_store.WriterSession, rk, tomb, length);
            _store.AddLiveBytes(length + 17);
            _store.MutateIndex(() => ki.Tombstone(rev));
            _changes.Add(new MvccEvent(EventType.Delete, new KeyValue { Key = ki.Key, ModRevision = Revision }));
            deleted.Add(prev);
        }

        return deleted;
    }

    public void PutMeta(string bucket, byte[] key, byte[] value)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        EnsureWritable();
        FasterBackend.Upsert(_store.WriterSession, MvccStore.MetaKey(bucket, key), value);
        _store.SetMeta(bucket, key, value);
    }

    public void DeleteMeta(string bucket, byte[] key)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        ArgumentNullException.ThrowIfNull(key);
        EnsureWritable();
        FasterBackend.Delete(_store.WriterSession, MvccStore.MetaKey(bucket, key));
        _store.SetMeta(bucket, key, null);
    }

    /// <summary>Publishes the revision if there were KV changes; always records the consistent index.</summary>
    public void Commit()
    {
        if (_finished)
        {
            return;
        }

        _finished = true;
        _store.TxnFinished(this, _changes.Count > 0);
    }

    public void Dispose()
    {
        if (_closed)
        {
            return;
        }

        if (!_finished && _changes.Count > 0)
        {
            Commit();
        }

        _closed = true;
        _store.TxnClosed(this);
    }

    private KeyValue? ReadVisible(KeyIndex ki)
    {
        if (!ki.TryGet(CurrentRevision, out var mod, out _, out _))
        {
            return null;
        }

        Span<byte> rk = stackalloc byte[17];
        MvccStore.WriteRevisionKey(rk, mod);
        return FasterBackend.TryRead(_store.WriterSession, rk, out var record)
            ? KeyValueCodec.Decode(record.AsSpan(1), keysOnly: false)
            : throw new InvalidOperationException($"revision {mod} is in the key index but missing from FasterKV");
    }

    private void EnsureWritable()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        if (_finished)
        {
            throw new InvalidOperationException("the txn is committed");
        }

        if (IsAlreadyApplied)
        {
            throw new InvalidOperationException($"entry {Index} is already applied (consistent index {_store.ConsistentIndex}); skip it");
        }
    }
}
