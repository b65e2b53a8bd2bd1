namespace KvStore.Raft;

/// <summary>
/// A batch of work the caller must carry out, in this order, before calling <see cref="RaftNode.Advance"/>:
/// <list type="number">
/// <item><description>Persist: <see cref="Snapshot"/> (if any), then <see cref="Entries"/> (an entry at index i replaces
/// every stored entry at index ≥ i), then <see cref="HardState"/> (if any). Durably (fsync) before step 2.</description></item>
/// <item><description>Send <see cref="Messages"/> (in any order; delivery may fail; report failures with
/// <see cref="RaftNode.ReportUnreachable"/> and snapshot outcomes with <see cref="RaftNode.ReportSnapshot"/>).</description></item>
/// <item><description>Apply: install <see cref="Snapshot"/> into the state machine, then apply
/// <see cref="CommittedEntries"/> in order; serve <see cref="ReadStates"/> once applied up to their index.</description></item>
/// <item><description>Call <see cref="RaftNode.Advance"/> with this Ready.</description></item>
/// </list>
/// </summary>
public sealed class Ready
{
    /// <summary>Leader and role, when they changed since the previous Ready; informational, not persisted.</summary>
    public SoftState? SoftState { get; init; }

    /// <summary>Term, vote and commit to persist, when they changed since the previous Ready.</summary>
    public HardState? HardState { get; init; }

    /// <summary>Entries to append to stable storage before sending <see cref="Messages"/>.</summary>
    public IReadOnlyList<Entry> Entries { get; init; } = [];

    /// <summary>A snapshot to persist and install (replaces the log and the state machine up to its index).</summary>
    public Snapshot? Snapshot { get; init; }

    /// <summary>Committed entries to apply in order (conf-change entries are applied to the membership by Advance).</summary>
    public IReadOnlyList<Entry> CommittedEntries { get; init; } = [];

    /// <summary>Messages to send after the persistence step.</summary>
    public IReadOnlyList<Message> Messages { get; init; } = [];

    /// <summary>Linearizable reads released in this batch.</summary>
    public IReadOnlyList<ReadState> ReadStates { get; init; } = [];

    /// <summary>True when the caller must persist something.</summary>
    public bool MustPersist => HardState is not null || Entries.Count > 0 || Snapshot is not null;
}
