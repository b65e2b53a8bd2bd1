namespace KvStore.Raft;

/// <summary>Where a snapshot sits in the log and the membership it carries.</summary>
public sealed class SnapshotMetadata
{
    /// <summary>Index of the last entry the snapshot covers.</summary>
    public ulong Index { get; init; }

    /// <summary>Term of that entry.</summary>
    public ulong Term { get; init; }

    /// <summary>Membership after applying everything up to <see cref="Index"/>.</summary>
    public ConfState ConfState { get; init; } = ConfState.Empty;
}
