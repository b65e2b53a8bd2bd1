using KvStore.Storage.Mvcc;

namespace KvStore.Server.Watch;

/// <summary>
/// The reads the watch hub needs from the store (history catch-up, compaction bound, prev_kv). Production uses
/// <see cref="MvccWatchableStore"/>; tests use an in-memory history. Called from background and gRPC threads.
/// </summary>
public interface IWatchableStore
{
    /// <summary>The store's current revision.</summary>
    long CurrentRevision { get; }

    /// <summary>The compacted revision (0 = never): history below it is gone.</summary>
    long CompactRevision { get; }

    /// <summary>Events on [key, rangeEnd) with from ≤ revision ≤ to, in revision order (etcd's rangeEnd forms).</summary>
    IReadOnlyList<MvccEvent> ReadEvents(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, long fromRevision, long toRevision, int maxEvents);

    /// <summary>The key as it was at a revision, or null (absent, or the revision is compacted).</summary>
    KeyValue? ReadAt(byte[] key, long revision);
}

/// <summary><see cref="IWatchableStore"/> over the storage engine.</summary>
public sealed class MvccWatchableStore(MvccStore store) : IWatchableStore
{
    /// <inheritdoc/>
    public long CurrentRevision => store.CurrentRevision;

    /// <inheritdoc/>
    public long CompactRevision => store.CompactRevision;

    /// <inheritdoc/>
    public IReadOnlyList<MvccEvent> ReadEvents(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, long fromRevision, long toRevision, int maxEvents) =>
        store.ReadEvents(key, rangeEnd, fromRevision, toRevision, maxEvents);

    /// <inheritdoc/>
    public KeyValue? ReadAt(byte[] key, long revision)
    {
        var result = store.Range(key, ReadOnlySpan<byte>.Empty, new RangeOptions(Revision: revision, Limit: 1));
        return result.Error == MvccError.None && result.Kvs.Count > 0 ? result.Kvs[0] : null;
    }
}
