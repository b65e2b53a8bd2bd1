namespace KvStore.Raft;

/// <summary>Immediate outcome of <see cref="RaftNode.Propose"/>, <see cref="RaftNode.ProposeConfChange"/> and <see cref="RaftNode.ReadIndex"/>.</summary>
public enum RequestResult
{
    /// <summary>The leader appended it (or queued the read); it is not committed yet.</summary>
    Accepted = 0,

    /// <summary>Sent to the known leader; it may still be lost, so the caller needs a timeout.</summary>
    Forwarded = 1,

    /// <summary>No leader is known (election in progress): retry later. etcd's "no leader".</summary>
    NoLeader = 2,

    /// <summary>The leader is handing leadership over; proposals are dropped until it finishes or aborts.</summary>
    LeaderTransferInProgress = 3,

    /// <summary>A membership change is already pending (only one at a time).</summary>
    ConfChangePending = 4,

    /// <summary>The membership change is not valid against the current membership.</summary>
    InvalidConfChange = 5,

    /// <summary>This leader is no longer a member of the cluster.</summary>
    NotMember = 6,
}

/// <summary>Outcome of sending a snapshot, reported by the transport through <see cref="RaftNode.ReportSnapshot"/>.</summary>
public enum SnapshotStatus
{
    /// <summary>The follower received the snapshot.</summary>
    Finish = 0,

    /// <summary>Sending failed; the leader will retry.</summary>
    Failure = 1,
}
