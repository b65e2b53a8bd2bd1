namespace KvStore.Storage.Wal;

/// <summary>A log entry as stored in the WAL. <see cref="Type"/>: 0 normal, 1 conf change.</summary>
public readonly record struct WalEntry(ulong Index, ulong Term, byte Type, ReadOnlyMemory<byte> Data);

/// <summary>Raft hard state (term, vote, commit) as stored in the WAL.</summary>
public readonly record struct WalHardState(ulong Term, ulong Vote, ulong Commit);

/// <summary>Marks that a snapshot (or checkpoint) covers every entry up to <see cref="Index"/>.</summary>
public readonly record struct WalSnapshotMarker(ulong Index, ulong Term);

/// <summary>What <see cref="WriteAheadLog.Replay"/> found on disk.</summary>
public sealed class WalReplay
{
    /// <summary>The last hard state record, if any.</summary>
    public WalHardState? HardState { get; init; }

    /// <summary>The last snapshot marker, if any.</summary>
    public WalSnapshotMarker? Snapshot { get; init; }

    /// <summary>Entries after the last snapshot marker, ascending and contiguous by index.</summary>
    public IReadOnlyList<WalEntry> Entries { get; init; } = [];
}
