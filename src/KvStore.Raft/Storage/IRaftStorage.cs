namespace KvStore.Raft.Storage;

/// <summary>
/// The durable log as the core sees it: read-only. The caller writes to it while handling a <see cref="Ready"/>
/// (snapshot, entries, hard state) and compacts it after applying; the core only reads.
/// Index mapping: the snapshot covers [1, S]; retained entries are [FirstIndex, LastIndex] with FirstIndex = S + 1.
/// The term of S stays available through <see cref="Term"/> after compaction.
/// </summary>
public interface IRaftStorage
{
    /// <summary>Persisted hard state and the membership of the latest snapshot.</summary>
    RaftInitialState InitialState();

    /// <summary>
    /// Entries in [<paramref name="lo"/>, <paramref name="hi"/>), stopping once their total size would exceed
    /// <paramref name="maxSize"/> (at least one entry is returned when any exists).
    /// </summary>
    /// <returns><see cref="StorageStatus.Compacted"/> when lo ≤ snapshot index; <see cref="StorageStatus.Unavailable"/> when hi &gt; LastIndex + 1.</returns>
    StorageStatus Entries(ulong lo, ulong hi, ulong maxSize, out IReadOnlyList<Entry> entries);

    /// <summary>Term of the entry at <paramref name="index"/> (index may equal the snapshot index).</summary>
    StorageStatus Term(ulong index, out ulong term);

    /// <summary>Index of the first retained entry (snapshot index + 1; the log may be empty).</summary>
    ulong FirstIndex();

    /// <summary>Index of the last entry (the snapshot index when the log is empty).</summary>
    ulong LastIndex();

    /// <summary>The most recent snapshot (possibly <see cref="KvStore.Raft.Snapshot.Empty"/>).</summary>
    StorageStatus Snapshot(out Snapshot snapshot);
}
