using System.Buffers.Binary;
using System.Collections.Concurrent;
using FASTER.core;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

using Session = ClientSession<SpanByte, SpanByte, SpanByte, SpanByteAndMemory, Empty, SpanByteFunctions<Empty>>;

/// <summary>
/// The MVCC key-value store: FasterKV holds revision -&gt; KeyValue (plus meta buckets and the state record with
/// the consistent index), an in-memory ordered key index maps keys to their revisions.
/// Threading: one writer (the applier: BeginWrite/Compact/Checkpoint) and any number of concurrent readers.
/// Readers take the index read lock for the whole read, the writer takes the write lock only to mutate the index;
/// writes of an open txn are at CurrentRevision + 1 and CurrentRevision is published at Commit, so readers
/// never see a half-applied txn. Every read that touches FasterKV rents its session inside the shift read lock and
/// returns it before leaving it, so <see cref="RestoreFrom"/> (which takes that lock for writing) can swap the backend
/// under them: a read sees the old state or the new one, never a mix or a disposed backend.
/// </summary>
public sealed partial class MvccStore : IMvccReader, IDisposable
{
    internal const byte RevisionPrefix = (byte)'r';
    internal const byte MetaPrefix = (byte)'m';
    internal const byte StatePrefix = (byte)'c';
    internal const byte FlagPut = 0;
    internal const byte FlagTombstone = 1;

    private readonly ILogger _logger;
    private readonly string _dataDirectory;
    private readonly MvccStoreOptions _options;

    // Replaced only by RestoreFrom (txn gate, meta lock, shift write lock and index write lock held, sessions drained).
    private FasterBackend _backend;
    private Session _writerSession;
    private readonly ConcurrentBag<Session> _readerSessions = [];
    private readonly SortedSet<KeyIndex> _index = new(KeyIndexComparer.Instance);
    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);

    // Held by the open write txn, Compact and checkpoints: maintenance (checkpoint, log compaction) runs between txns.
    private readonly TxnGate _txnGate = new();

    // Readers hold it shared for a whole read; log compaction takes it exclusively only to move the begin address,
    // so no read can follow a record address that a concurrent begin-address shift just cut off.
    private readonly ReaderWriterLockSlim _shiftLock = new(LockRecursionPolicy.NoRecursion);
    private readonly Dictionary<string, Dictionary<byte[], byte[]>> _meta = new(StringComparer.Ordinal);
    private readonly byte[] _stateBuffer = new byte[28];
    private long _currentRevision;
    private long _compactRevision;
    private long _consistentIndex;
    private long _liveBytes;
    private MvccWriteTxn? _openTxn;
    private long _stateSaves;
    private (long StateSaves, long Begin, long Tail)? _lastCheckpoint;
    private bool _disposed;

    private MvccStore(MvccStoreOptions options, ILogger logger)
    {
        _logger = logger;
        _options = options;
        _dataDirectory = Path.GetFullPath(options.DataDirectory);
        DurableDirectory.Create(_dataDirectory);
        _recovered = new RecoveredRecords();
        _backend = new FasterBackend(_dataDirectory, options.IndexBuckets, options.MemorySizeBits, options.PageSizeBits, options.SegmentSizeBits, logger, _recovered, options.WrapLogDevice, options.WrapCheckpointDevice, options.LogHoldsEveryWrite);
        _writerSession = _backend.NewSession();
        _logCompactionMinBytes = options.LogCompactionMinBytes;
    }

    /// <summary>Opens the store: loads the last FasterKV checkpoint (data + consistent index + meta), rebuilds the key index.</summary>
    public static MvccStore Open(MvccStoreOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        FinishRestore(Path.GetFullPath(options.DataDirectory).TrimEnd(Path.DirectorySeparatorChar), logger);
        var store = new MvccStore(options, logger);
        try
        {
            store.Recover();
            return store;
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    public long CurrentRevision => Volatile.Read(ref _currentRevision);

    public long CompactRevision => Volatile.Read(ref _compactRevision);

    /// <summary>Index of the last applied WAL/raft entry, durable together with the data (state record in the checkpoint).</summary>
    public ulong ConsistentIndex => (ulong)Volatile.Read(ref _consistentIndex);

    /// <summary>Bytes the store occupies: its files on disk plus the FasterKV log tail still only in memory, at least
    /// <see cref="DbSizeInUseBytes"/> (etcd's dbSize &gt;= dbSizeInUse; see <c>AllocatedBytes</c>).</summary>
    public long DbSizeBytes
    {
        get
        {
            // The shift read lock keeps RestoreFrom from renaming the directory while it is enumerated.
            _shiftLock.EnterReadLock();
            try
            {
                return AllocatedBytes();
            }
            finally
            {
                _shiftLock.ExitReadLock();
            }
        }
    }

    /// <summary>Bytes of live records (revisions not yet compacted away, meta and state); never less than the state
    /// record every store holds (as etcd's dbSizeInUse, never 0: bbolt's meta pages and buckets are in use from the start).</summary>
    public long DbSizeInUseBytes => Math.Max(Interlocked.Read(ref _liveBytes), StateRecordBytes);

    /// <summary>The state record (consistent index, revisions, CRC) with its key.</summary>
    private const long StateRecordBytes = 28 + 1;

    public RangeResult Range(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, RangeOptions options)
    {
        _shiftLock.EnterReadLock();
        var session = RentSession();
        try
        {
            return RangeCore(session, key, rangeEnd, options, CurrentRevision);
        }
        finally
        {
            _readerSessions.Add(session);
            _shiftLock.ExitReadLock();
        }
    }

    /// <summary>
    /// Starts the single write txn for the raft/WAL entry at index. If index &lt;= ConsistentIndex the entry was
    /// applied before (replay after a crash): the txn reports <see cref="MvccWriteTxn.IsAlreadyApplied"/> and refuses changes.
    /// </summary>
    public MvccWriteTxn BeginWrite(ulong index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_openTxn is not null)
        {
            throw new InvalidOperationException("a write txn is already open: the store has a single writer");
        }

        _txnGate.EnterWriter();
        var applied = index != 0 && index <= ConsistentIndex;
        _openTxn = new MvccWriteTxn(this, index, CurrentRevision + 1, applied);
        return _openTxn;
    }

    public IEnumerable<KeyValuePair<byte[], byte[]>> ReadMeta(string bucket)
    {
        lock (_meta)
        {
            return _meta.TryGetValue(bucket, out var items)
                ? items.Select(kv => KeyValuePair.Create(kv.Key.ToArray(), kv.Value.ToArray())).OrderBy(kv => kv.Key, ByteKeyComparer.Instance).ToList()
                : [];
        }
    }

    /// <summary>
    /// Every live key that has a lease, with the lease of its latest put, from the key index alone (no record is read,
    /// which for a large store on disk took seconds): what the lessor attaches when it recovers. Between write txns.
    /// </summary>
    public IReadOnlyList<(byte[] Key, long Lease)> LeasedKeys()
    {
        _lock.EnterReadLock();
        try
        {
            return _index.Where(ki => ki.Lease != 0).Select(ki => (ki.Key, ki.Lease)).ToList();
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>
    /// Change history for watchers: events with fromRevision &lt;= main revision &lt;= toRevision (0 = current),
    /// ordered by (main, sub). Stops at a main revision boundary once maxEvents (&gt; 0) is reached, so a caller
    /// can resume from the next main revision without losing events.
    /// </summary>
    public IReadOnlyList<MvccEvent> ReadEvents(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, long fromRevision, long toRevision, int maxEvents)
    {
        var events = new List<MvccEvent>();
        Span<byte> rk = stackalloc byte[17];
        _shiftLock.EnterReadLock();
        var session = RentSession();
        try
        {
            var current = CurrentRevision;
            var to = toRevision <= 0 || toRevision > current ? current : toRevision;
            for (var main = Math.Max(1, fromRevision); main <= to; main++)
            {
                for (long sub = 0; ; sub++)
                {
                    WriteRevisionKey(rk, new Revision(main, sub));
                    if (!FasterBackend.TryRead(session, rk, out var record))
                    {
                        break;
                    }

                    var kvBytes = record.AsSpan(1);
                    if (!InRange(KeyValueCodec.PeekKey(kvBytes), key, rangeEnd))
                    {
                        continue;
                    }

                    var kv = KeyValueCodec.Decode(kvBytes, keysOnly: false);
                    if (record[0] == FlagTombstone)
                    {
                        events.Add(new MvccEvent(EventType.Delete, new KeyValue { Key = kv.Key, ModRevision = main }));
                    }
                    else
                    {
                        events.Add(new MvccEvent(EventType.Put, kv));
                    }
                }

                if (maxEvents > 0 && events.Count >= maxEvents)
                {
                    break;
                }
            }
        }
        finally
        {
            _readerSessions.Add(session);
            _shiftLock.ExitReadLock();
        }

        return events;
    }

    /// <summary>Clean shutdown: finishes physical compaction, takes a checkpoint (so a restart replays nothing), closes.</summary>
    public void Dispose() => Close(checkpoint: true);

    /// <summary>Closes without a final checkpoint, as a crash would leave things (tests).</summary>
    internal void CloseWithoutCheckpoint() => Close(checkpoint: false);

    private void Close(bool checkpoint)
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            WaitPhysicalCompaction();
            // The host usually checkpoints just before disposing; a second checkpoint of the same state would only
            // repeat the I/O (and the log line).
            if (checkpoint && _openTxn is null && _lastCheckpoint != CheckpointFingerprint())
            {
                Checkpoint();
            }
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _logger.LogWarning(ex, "final checkpoint failed during shutdown");
        }

        _disposed = true;

        _writerSession.Dispose();
        while (_readerSessions.TryTake(out var s))
        {
            s.Dispose();
        }

        _backend.Dispose();
        _lock.Dispose();
        _shiftLock.Dispose();
    }

    internal Session WriterSession => _writerSession;

    /// <summary>Tests: how many callers that hold writes off wait for the txn gate.</summary>
    internal int TxnGateHoldersWaitingForTest => _txnGate.HoldersWaiting;

    /// <summary>A reader session of the current backend. Caller holds the shift read lock until it returns the session.</summary>
    internal Session RentSession() => _readerSessions.TryTake(out var s) ? s : _backend.NewSession();

    internal static void WriteRevisionKey(Span<byte> dest, Revision rev)
    {
        dest[0] = RevisionPrefix;
        BinaryPrimitives.WriteInt64BigEndian(dest[1..], rev.Main);
        BinaryPrimitives.WriteInt64BigEndian(dest[9..], rev.Sub);
    }

    internal static byte[] MetaKey(string bucket, ReadOnlySpan<byte> key)
    {
        var b = System.Text.Encoding.UTF8.GetBytes(bucket);
        var result = new byte[1 + b.Length + 1 + key.Length];
        result[0] = MetaPrefix;
        b.CopyTo(result, 1);
        key.CopyTo(result.AsSpan(2 + b.Length));
        return result;
    }

    /// <summary>etcd's range rules: end empty = the key alone; end "\0" = every key &gt;= key; else [key, end).</summary>
    internal static bool InRange(ReadOnlySpan<byte> k, ReadOnlySpan<byte> key, ReadOnlySpan<byte> end)
    {
        if (end.IsEmpty)
        {
            return k.SequenceEqual(key);
        }

        if (k.SequenceCompareTo(key) < 0)
        {
            return false;
        }

        return (end.Length == 1 && end[0] == 0) || k.SequenceCompareTo(end) < 0;
    }

    /// <summary>Key indexes whose key is in the range, ascending. Caller holds the read or write lock.</summary>
    internal IEnumerable<KeyIndex> IndexRange(byte[] key, byte[] end)
    {
        if (end.Length == 0)
        {
            if (_index.TryGetValue(new KeyIndex(key), out var single))
            {
                yield return single;
            }

            yield break;
        }

        var all = end.Length == 1 && end[0] == 0;
        if (!all && key.AsSpan().SequenceCompareTo(end) >= 0)
        {
            yield break;
        }

        var max = _index.Max;
        if (max is null || KeyIndexComparer.Instance.Compare(max, new KeyIndex(key)) < 0)
        {
            yield break;
        }

        foreach (var ki in _index.GetViewBetween(new KeyIndex(key), max))
        {
            if (!all && ki.Key.AsSpan().SequenceCompareTo(end) >= 0)
            {
                yield break;
            }

            yield return ki;
        }
    }

    internal RangeResult RangeCore(Session session, ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, RangeOptions options, long current)
    {
        var atRev = options.Revision <= 0 ? current : options.Revision;
        var keyArr = key.ToArray();
        var endArr = rangeEnd.ToArray();
        _lock.EnterReadLock();
        try
        {
            var compact = CompactRevision;
            if (atRev > current)
            {
                return new RangeResult { Error = MvccError.FutureRevision, Revision = current };
            }

            if (atRev < compact)
            {
                return new RangeResult { Error = MvccError.Compacted, Revision = current };
            }

            var revs = new List<Revision>();
            foreach (var ki in IndexRange(keyArr, endArr))
            {
                if (ki.TryGet(atRev, out var mod, out _, out _))
                {
                    revs.Add(mod);
                }
            }

            if (options.CountOnly)
            {
                return new RangeResult { Count = revs.Count, Revision = current };
            }

            var take = options.Limit <= 0 || options.Limit > revs.Count ? revs.Count : (int)options.Limit;
            var kvs = new KeyValue[take];
            Span<byte> rk = stackalloc byte[17];
            for (var i = 0; i < take; i++)
            {
                WriteRevisionKey(rk, revs[i]);
                if (!FasterBackend.TryRead(session, rk, out var record))
                {
                    throw new InvalidOperationException($"revision {revs[i]} is in the key index but missing from FasterKV");
                }

                kvs[i] = KeyValueCodec.Decode(record.AsSpan(1), options.KeysOnly);
            }

            return new RangeResult { Kvs = kvs, Count = revs.Count, Revision = current };
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>Writes the state record: consistent index, current revision, compact revision, CRC-32C.</summary>
    internal void SaveState(ulong consistentIndex)
    {
        var b = _stateBuffer;
        BinaryPrimitives.WriteUInt64LittleEndian(b, consistentIndex);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), CurrentRevision);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(16), CompactRevision);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(24), Crc32C.Compute(b.AsSpan(0, 24)));
        FasterBackend.Upsert(_writerSession, [StatePrefix], b);
        Volatile.Write(ref _consistentIndex, (long)consistentIndex);
        Interlocked.Increment(ref _stateSaves);
    }

    internal void TxnFinished(MvccWriteTxn txn, bool changed)
    {
        if (changed)
        {
            Volatile.Write(ref _currentRevision, txn.Revision);
        }

        if (txn.Index != 0 && !txn.IsAlreadyApplied)
        {
            SaveState(Math.Max(txn.Index, ConsistentIndex));
        }
        else if (changed)
        {
            SaveState(ConsistentIndex);
        }
    }

    internal void TxnClosed(MvccWriteTxn txn)
    {
        if (ReferenceEquals(_openTxn, txn))
        {
            _openTxn = null;
            _txnGate.Exit();
        }
    }

    internal KeyIndex GetOrAddKeyIndex(byte[] key)
    {
        var probe = new KeyIndex(key);
        _lock.EnterReadLock();
        try
        {
            if (_index.TryGetValue(probe, out var existing))
            {
                return existing;
            }
        }
        finally
        {
            _lock.ExitReadLock();
        }

        _lock.EnterWriteLock();
        try
        {
            _index.Add(probe);
            return probe;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    internal void MutateIndex(Action action)
    {
        _lock.EnterWriteLock();
        try
        {
            action();
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    internal List<KeyIndex> SnapshotRange(byte[] key, byte[] end)
    {
        _lock.EnterReadLock();
        try
        {
            return [.. IndexRange(key, end)];
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    internal void AddLiveBytes(long delta) => Interlocked.Add(ref _liveBytes, delta);

    internal void SetMeta(string bucket, byte[] key, byte[]? value)
    {
        lock (_meta)
        {
            if (!_meta.TryGetValue(bucket, out var items))
            {
                items = new Dictionary<byte[], byte[]>(ByteKeyComparer.Instance);
                _meta[bucket] = items;
            }

            if (value is null)
            {
                items.Remove(key);
            }
            else
            {
                items[key.ToArray()] = value.ToArray();
            }
        }
    }
}
