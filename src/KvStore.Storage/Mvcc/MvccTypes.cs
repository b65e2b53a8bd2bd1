namespace KvStore.Storage.Mvcc;

/// <summary>Kind of a change.</summary>
public enum EventType
{
    Put,
    Delete,
}

/// <summary>One change. For <see cref="EventType.Delete"/>, <see cref="Kv"/> carries Key and ModRevision (the deleting revision), other fields 0.</summary>
public sealed record MvccEvent(EventType Type, KeyValue Kv);

/// <summary>Revision errors are values, not exceptions.</summary>
public enum MvccError
{
    None,
    Compacted,
    FutureRevision,
}

/// <summary>Options of a range read. Revision 0 = current; Limit 0 = no limit.</summary>
public readonly record struct RangeOptions(long Revision = 0, long Limit = 0, bool CountOnly = false, bool KeysOnly = false);

/// <summary>Result of a range read.</summary>
public sealed class RangeResult
{
    public MvccError Error { get; init; }

    /// <summary>Matching keys in ascending key order, at most Limit.</summary>
    public IReadOnlyList<KeyValue> Kvs { get; init; } = [];

    /// <summary>Number of all matching keys (ignores Limit).</summary>
    public long Count { get; init; }

    /// <summary>The store's current revision at the time of the read.</summary>
    public long Revision { get; init; }
}

/// <summary>Result of <see cref="MvccStore.Compact"/>.</summary>
public readonly record struct CompactResult(MvccError Error, long CompactRevision, long CurrentRevision);

/// <summary>Result of <see cref="MvccStore.HashKV"/>; deconstructs like the tuple (Hash, CompactRevision, Revision).</summary>
public readonly record struct HashKVResult(MvccError Error, uint Hash, long CompactRevision, long Revision)
{
    public void Deconstruct(out uint hash, out long compactRevision, out long revision)
    {
        hash = Hash;
        compactRevision = CompactRevision;
        revision = Revision;
    }
}

/// <summary>Read view shared by the store (committed state) and a write txn (sees its own writes).</summary>
public interface IMvccReader
{
    long CurrentRevision { get; }

    /// <summary>0 if never compacted.</summary>
    long CompactRevision { get; }

    /// <summary>
    /// rangeEnd empty = single key; rangeEnd = "\0" = all keys &gt;= key; otherwise [key, rangeEnd).
    /// </summary>
    RangeResult Range(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, RangeOptions options);
}

/// <summary>Where and how big the store is.</summary>
public sealed class MvccStoreOptions
{
    /// <summary>Directory of the FasterKV log and checkpoints (created if missing).</summary>
    public required string DataDirectory { get; init; }

    /// <summary>Hash index size in buckets (power of two; 64 bytes each).</summary>
    public long IndexBuckets { get; init; } = 1L << 16;

    /// <summary>
    /// log2 of the in-memory part of the FasterKV log (default 16 MiB, four pages). Older records are read from disk
    /// (through the page cache, on the reader's thread); a larger window mostly holds revisions nobody reads, and the
    /// restart reads all of it back.
    /// </summary>
    public int MemorySizeBits { get; init; } = 24;

    /// <summary>log2 of the FasterKV page size (default 4 MiB).</summary>
    public int PageSizeBits { get; init; } = 22;

    /// <summary>
    /// log2 of the FasterKV segment file size (default 16 MiB). Disk space comes back a whole segment at a time
    /// (log compaction moves the begin address; segments wholly below it are deleted after the next checkpoint).
    /// </summary>
    public int SegmentSizeBits { get; init; } = 24;

    /// <summary>
    /// Background log compaction (after a physical compaction) runs once the estimated garbage in the FasterKV log
    /// exceeds both this many bytes and the estimated live footprint (default 16 MiB). <see cref="MvccStore.DefragmentAsync"/> always runs it.
    /// </summary>
    public long LogCompactionMinBytes { get; init; } = 16L << 20;

    /// <summary>
    /// Set when the caller's write-ahead log still holds every write made since this store was created (it has never
    /// been truncated behind a checkpoint). A store whose checkpoints all lack readable metadata (a crash during its
    /// first checkpoint) then drops them and opens empty at index 0 for that log to replay; without it, such a store
    /// refuses to open, since the writes the checkpoint was taking may exist nowhere else.
    /// </summary>
    public bool LogHoldsEveryWrite { get; init; }

    /// <summary>Tests only: wraps the FasterKV log device (power-cut simulation); null in the server.</summary>
    internal Func<FASTER.core.IDevice, FASTER.core.IDevice>? WrapLogDevice { get; init; }

    /// <summary>Tests only: wraps each device a FasterKV checkpoint file goes through (power-cut simulation); null in the server.</summary>
    internal Func<FASTER.core.IDevice, FASTER.core.IDevice>? WrapCheckpointDevice { get; init; }
}
