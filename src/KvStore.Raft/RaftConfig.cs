using KvStore.Raft.Storage;

namespace KvStore.Raft;

/// <summary>Settings of one member. <see cref="Validate"/> runs in the <see cref="RaftNode"/> constructor.</summary>
public sealed class RaftConfig
{
    /// <summary>This member's id (non-zero, never reused for another member).</summary>
    public ulong Id { get; init; }

    /// <summary>Ticks without hearing from a leader before campaigning; the actual timeout is random in [ElectionTick, 2*ElectionTick).</summary>
    public int ElectionTick { get; init; } = 10;

    /// <summary>Ticks between leader heartbeats; must be less than <see cref="ElectionTick"/>.</summary>
    public int HeartbeatTick { get; init; } = 1;

    /// <summary>The durable log, read-only for the core.</summary>
    public IRaftStorage Storage { get; init; } = null!;

    /// <summary>Upper bound in bytes of the entries in one append message (at least one entry is always sent).</summary>
    public ulong MaxSizePerMsg { get; init; } = 1024 * 1024;

    /// <summary>Upper bound in bytes of committed entries handed out by one Ready (at least one).</summary>
    public ulong MaxCommittedSizePerReady { get; init; } = 64 * 1024 * 1024;

    /// <summary>Append messages in flight to one follower in replicate state.</summary>
    public int MaxInflightMsgs { get; init; } = 256;

    /// <summary>A leader steps down when it did not hear from a quorum within an election timeout; followers then ignore votes while they have a live leader.</summary>
    public bool CheckQuorum { get; init; } = true;

    /// <summary>Run a pre-election before bumping the term, so a rejoining member does not disrupt the cluster.</summary>
    public bool PreVote { get; init; } = true;

    /// <summary>
    /// Voters of a brand-new cluster. Used only when storage is empty (nothing was ever persisted): the core then
    /// writes one AddNode entry per voter at term 1 as committed entries, identically on every initial member.
    /// A member that joins later starts with none and learns the membership from the leader.
    /// </summary>
    public IReadOnlyList<ulong> BootstrapVoters { get; init; } = [];

    /// <summary>Election jitter source; default: <see cref="SeededRaftRandom"/> seeded with <see cref="Id"/>.</summary>
    public IRaftRandom? Random { get; init; }

    /// <summary>Optional diagnostics sink.</summary>
    public IRaftLogger? Logger { get; init; }

    /// <summary>Rejects settings the core cannot run with.</summary>
    /// <exception cref="ArgumentException">A setting is out of range.</exception>
    public void Validate()
    {
        if (Id == 0)
        {
            throw new ArgumentException("raft: Id must not be 0", nameof(Id));
        }

        if (HeartbeatTick <= 0)
        {
            throw new ArgumentException("raft: HeartbeatTick must be greater than 0", nameof(HeartbeatTick));
        }

        if (ElectionTick <= HeartbeatTick)
        {
            throw new ArgumentException("raft: ElectionTick must be greater than HeartbeatTick", nameof(ElectionTick));
        }

        if (Storage is null)
        {
            throw new ArgumentException("raft: Storage is required", nameof(Storage));
        }

        if (MaxInflightMsgs <= 0)
        {
            throw new ArgumentException("raft: MaxInflightMsgs must be greater than 0", nameof(MaxInflightMsgs));
        }

        if (MaxSizePerMsg == 0 || MaxCommittedSizePerReady == 0)
        {
            throw new ArgumentException("raft: size limits must be greater than 0", nameof(MaxSizePerMsg));
        }

        if (BootstrapVoters.Contains(0UL) || BootstrapVoters.Distinct().Count() != BootstrapVoters.Count)
        {
            throw new ArgumentException("raft: BootstrapVoters must be distinct non-zero ids", nameof(BootstrapVoters));
        }
    }
}
