namespace KvStore.Raft;

/// <summary>
/// Kinds of <see cref="Message"/>. The local kinds (<see cref="Hup"/>, <see cref="Beat"/>, <see cref="Unreachable"/>,
/// <see cref="SnapStatus"/>, <see cref="CheckQuorum"/>) never cross the network; <see cref="RaftNode.Step"/> ignores them.
/// </summary>
public enum MessageType
{
    /// <summary>Local: start an election.</summary>
    Hup = 0,

    /// <summary>Local: leader sends heartbeats.</summary>
    Beat = 1,

    /// <summary>A proposal forwarded from a follower to the leader (Entries set).</summary>
    Prop = 2,

    /// <summary>Append entries (Index/LogTerm: the entry before Entries; Commit: leader commit).</summary>
    App = 3,

    /// <summary>Reply to <see cref="App"/> or <see cref="Snap"/> (Index: last matching index, or the rejected index with Reject, RejectHint, LogTerm).</summary>
    AppResp = 4,

    /// <summary>Request a vote (Index/LogTerm: candidate's last entry).</summary>
    Vote = 5,

    /// <summary>Vote reply.</summary>
    VoteResp = 6,

    /// <summary>Install a snapshot (Snapshot set).</summary>
    Snap = 7,

    /// <summary>Leader heartbeat (Commit, Context: pending read-index context).</summary>
    Heartbeat = 8,

    /// <summary>Heartbeat reply (Context echoed).</summary>
    HeartbeatResp = 9,

    /// <summary>Local: the transport could not reach <see cref="Message.From"/>.</summary>
    Unreachable = 10,

    /// <summary>Local: outcome of sending a snapshot (Reject: failed).</summary>
    SnapStatus = 11,

    /// <summary>Local: leader checks that a quorum was recently active.</summary>
    CheckQuorum = 12,

    /// <summary>Ask the leader to hand leadership to <see cref="Message.From"/>.</summary>
    TransferLeader = 13,

    /// <summary>Leader tells a caught-up member to campaign now, ignoring leases.</summary>
    TimeoutNow = 14,

    /// <summary>Linearizable read request (Context).</summary>
    ReadIndex = 15,

    /// <summary>Reply to a forwarded read (Index, Context).</summary>
    ReadIndexResp = 16,

    /// <summary>Pre-election probe at Term+1 that changes no state.</summary>
    PreVote = 17,

    /// <summary>Pre-vote reply.</summary>
    PreVoteResp = 18,
}
