namespace KvStore.Server.Node;

/// <summary>
/// What the watch and lease code needs to know about Raft leadership. The node loop owns the truth; the default
/// registration (<see cref="SingleMemberLeaderStatus"/>) is right for a single member, which always leads.
/// </summary>
public interface ILeaderStatus
{
    /// <summary>True when this member knows a current leader (itself or another). Drives <c>hasleader</c> checks.</summary>
    bool HasLeader { get; }

    /// <summary>True when this member is the leader: only the leader runs lease expiry and serves keep-alives.</summary>
    bool IsLeader { get; }
}

/// <summary>A single member is always its own leader.</summary>
public sealed class SingleMemberLeaderStatus : ILeaderStatus
{
    /// <inheritdoc/>
    public bool HasLeader => true;

    /// <inheritdoc/>
    public bool IsLeader => true;
}
