namespace KvStore.Raft;

/// <summary>
/// The part of a member's state that must be durable before it sends any message of the same Ready:
/// current term, the vote cast in that term and the highest known commit index.
/// </summary>
/// <param name="Term">Current term.</param>
/// <param name="Vote">Member voted for in <paramref name="Term"/> (0: none).</param>
/// <param name="Commit">Highest index known to be committed.</param>
public readonly record struct HardState(ulong Term, ulong Vote, ulong Commit)
{
    /// <summary>True for the state of a member that never persisted anything.</summary>
    public bool IsEmpty => Term == 0 && Vote == 0 && Commit == 0;
}
