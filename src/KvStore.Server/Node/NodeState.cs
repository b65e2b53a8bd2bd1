namespace KvStore.Server.Node;

/// <summary>
/// The member's raft-level progress as other components read it (headers, status, metrics).
/// Written only by the node loop; read from any thread.
/// </summary>
public sealed class NodeState
{
    private long _term;
    private long _committedIndex;
    private long _appliedIndex;
    private long _leaderId;

    /// <summary>Current raft term.</summary>
    public ulong Term
    {
        get => (ulong)Volatile.Read(ref _term);
        set => Volatile.Write(ref _term, (long)value);
    }

    /// <summary>Highest index known durable (committed, for one member).</summary>
    public ulong CommittedIndex
    {
        get => (ulong)Volatile.Read(ref _committedIndex);
        set => Volatile.Write(ref _committedIndex, (long)value);
    }

    /// <summary>Highest index applied to the store.</summary>
    public ulong AppliedIndex
    {
        get => (ulong)Volatile.Read(ref _appliedIndex);
        set => Volatile.Write(ref _appliedIndex, (long)value);
    }

    /// <summary>Current leader's member ID (0 = no leader).</summary>
    public ulong LeaderId
    {
        get => (ulong)Volatile.Read(ref _leaderId);
        set => Volatile.Write(ref _leaderId, (long)value);
    }

    /// <summary>True when a leader is known.</summary>
    public bool HasLeader => LeaderId != 0;
}
