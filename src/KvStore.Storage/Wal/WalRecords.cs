namespace KvStore.Storage.Wal;

/// <summary>A log entry as stored in the WAL. <see cref="Type"/>: 0 normal, 1 conf change.</summary>
public readonly record struct WalEntry(ulong Index, ulong Term, byte Type, ReadOnlyMemory<byte> Data);

/// <summary>Raft hard state (term, vote, commit) as stored in the WAL.</summary>
public readonly record struct WalHardState(ulong Term, ulong Vote, ulong Commit);

/// <summary>
/// Marks that a snapshot (or checkpoint) covers every entry up to <see cref="Index"/>. A marker with a membership
/// (<see cref="Voters"/>/<see cref="Learners"/>) or <see cref="ReplacesLog"/> is stored in the v2 record format
/// (kind 4, see docs/storage.md); one without is stored as before (kind 3).
/// </summary>
public readonly record struct WalSnapshotMarker(ulong Index, ulong Term)
{
    private readonly IReadOnlyList<ulong>? _voters;
    private readonly IReadOnlyList<ulong>? _learners;

    /// <summary>Voting members at <see cref="Index"/> (raft ConfState.Voters).</summary>
    public IReadOnlyList<ulong> Voters
    {
        get => _voters ?? [];
        init => _voters = value;
    }

    /// <summary>Learners at <see cref="Index"/> (raft ConfState.Learners).</summary>
    public IReadOnlyList<ulong> Learners
    {
        get => _learners ?? [];
        init => _learners = value;
    }

    /// <summary>
    /// True for a snapshot installed from the leader: on replay it discards every entry read before it (the local log
    /// may hold a conflicting suffix past <see cref="Index"/>), not only those up to <see cref="Index"/>.
    /// </summary>
    public bool ReplacesLog { get; init; }

    /// <summary>Needs the v2 record format.</summary>
    internal bool IsExtended => ReplacesLog || Voters.Count > 0 || Learners.Count > 0;

    public bool Equals(WalSnapshotMarker other) =>
        Index == other.Index && Term == other.Term && ReplacesLog == other.ReplacesLog
        && Voters.SequenceEqual(other.Voters) && Learners.SequenceEqual(other.Learners);

    public override int GetHashCode() => HashCode.Combine(Index, Term, ReplacesLog, Voters.Count, Learners.Count);
}

/// <summary>What <see cref="WriteAheadLog.Replay"/> found on disk.</summary>
public sealed class WalReplay
{
    /// <summary>The last hard state record, if any.</summary>
    public WalHardState? HardState { get; init; }

    /// <summary>The last snapshot marker, if any.</summary>
    public WalSnapshotMarker? Snapshot { get; init; }

    /// <summary>Entries after the last snapshot marker, ascending and contiguous by index.</summary>
    public IReadOnlyList<WalEntry> Entries { get; init; } = [];

    /// <summary>
    /// Whether the log holds every entry from the first on: no snapshot marker yet, and entries from index 1. Until the
    /// first snapshot, then, every write a store built from this log holds can be replayed from it
    /// (<see cref="Mvcc.MvccStoreOptions.LogHoldsEveryWrite"/>).
    /// </summary>
    public bool HoldsEveryEntry => Snapshot is null && Entries.Count > 0 && Entries[0].Index == 1;
}
