namespace KvStore.Raft.Storage;

/// <summary>Outcome of a storage read; failures are values because the core handles them (e.g. by sending a snapshot).</summary>
public enum StorageStatus
{
    /// <summary>The value was returned.</summary>
    Ok = 0,

    /// <summary>The requested index precedes the first retained entry (covered by the snapshot).</summary>
    Compacted = 1,

    /// <summary>The requested index is past the last entry.</summary>
    Unavailable = 2,

    /// <summary>A snapshot is being produced; the core retries later.</summary>
    SnapshotTemporarilyUnavailable = 3,
}

/// <summary>What a member persisted before it (re)started.</summary>
/// <param name="HardState">Last persisted term, vote and commit.</param>
/// <param name="ConfState">Membership of the last snapshot (empty without a snapshot).</param>
public readonly record struct RaftInitialState(HardState HardState, ConfState ConfState);
