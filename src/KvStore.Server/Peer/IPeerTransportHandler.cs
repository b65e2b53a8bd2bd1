using KvStore.Raft;

namespace KvStore.Server.Peer;

/// <summary>
/// What the node gives the <see cref="PeerTransport"/>: a sink for what arrives from peers and callbacks for send outcomes,
/// to be fed into Raft (<see cref="RaftNode.Step"/>, <see cref="RaftNode.ReportUnreachable"/>,
/// <see cref="RaftNode.ReportSnapshot"/>). Members are called from transport threads, concurrently for different peers:
/// an implementation hands them to the node loop (e.g. through a channel) and never touches Raft state directly.
/// </summary>
public interface IPeerTransportHandler
{
    /// <summary>
    /// A message from a peer (never a snapshot), in the order the peer sent it. The returned task completing means the
    /// transport may read the next one; a slow node thereby slows the sender down (and eventually makes it drop messages).
    /// </summary>
    ValueTask DeliverAsync(Message message, CancellationToken cancellationToken);

    /// <summary>
    /// A snapshot from a peer, fully written and flushed to <see cref="ReceivedSnapshot.FilePath"/>. The node owns (and must
    /// eventually delete) the file once this returns; if it throws, the transport deletes the file and the sender is told the
    /// transfer failed. The sender reports success only after this returns.
    /// </summary>
    ValueTask DeliverSnapshotAsync(ReceivedSnapshot snapshot, CancellationToken cancellationToken);

    /// <summary>Messages to <paramref name="peerId"/> were lost (queue full, connection failed): call
    /// <see cref="RaftNode.ReportUnreachable"/>.</summary>
    void ReportUnreachable(ulong peerId);

    /// <summary>A snapshot sent to <paramref name="peerId"/> was stored by it (true) or failed (false): call
    /// <see cref="RaftNode.ReportSnapshot"/>.</summary>
    void ReportSnapshot(ulong peerId, bool success);
}

/// <summary>A snapshot received from a peer.</summary>
/// <param name="Message">The <see cref="MessageType.Snap"/> message: sender, term and <see cref="Snapshot.Metadata"/>; its
/// <see cref="Snapshot.Data"/> is empty (the bytes are in the file).</param>
/// <param name="FilePath">The file holding the snapshot data.</param>
/// <param name="Size">Length of the file in bytes.</param>
public sealed record ReceivedSnapshot(Message Message, string FilePath, long Size);
