namespace KvStore.Raft;

/// <summary>The role a member plays in its current term.</summary>
public enum RaftRole
{
    /// <summary>Follows a leader (or waits for one).</summary>
    Follower = 0,

    /// <summary>Probing whether an election could be won, without bumping the term.</summary>
    PreCandidate = 1,

    /// <summary>Campaigning for votes.</summary>
    Candidate = 2,

    /// <summary>Leads the term.</summary>
    Leader = 3,
}

/// <summary>Volatile state worth reporting (not persisted).</summary>
/// <param name="Leader">Known leader id (0: none).</param>
/// <param name="Role">This member's role.</param>
public readonly record struct SoftState(ulong Leader, RaftRole Role);
