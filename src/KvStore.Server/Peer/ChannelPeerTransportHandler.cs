using System.Threading.Channels;
using KvStore.Raft;

namespace KvStore.Server.Peer;

/// <summary>
/// An <see cref="IPeerTransportHandler"/> over channels, for a node loop that reads one channel of messages: peer messages
/// are written as they are; send outcomes become Raft's local kinds — <see cref="MessageType.Unreachable"/> (From = peer)
/// and <see cref="MessageType.SnapStatus"/> (From = peer, Reject = failed) — which the loop turns into
/// <see cref="RaftNode.ReportUnreachable"/> / <see cref="RaftNode.ReportSnapshot"/> calls. Received snapshots go to their
/// own channel.
/// </summary>
public sealed class ChannelPeerTransportHandler : IPeerTransportHandler
{
    private readonly ChannelWriter<Message> _messages;
    private readonly ChannelWriter<ReceivedSnapshot> _snapshots;

    /// <summary>Creates the adapter.</summary>
    /// <param name="messages">Peer messages and local outcome reports. Unreachable reports are dropped when it is full
    /// (they are advisory); snapshot outcomes wait for room.</param>
    /// <param name="snapshots">Received snapshots.</param>
    public ChannelPeerTransportHandler(ChannelWriter<Message> messages, ChannelWriter<ReceivedSnapshot> snapshots)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ArgumentNullException.ThrowIfNull(snapshots);
        _messages = messages;
        _snapshots = snapshots;
    }

    /// <inheritdoc/>
    public ValueTask DeliverAsync(Message message, CancellationToken cancellationToken) => _messages.WriteAsync(message, cancellationToken);

    /// <inheritdoc/>
    public ValueTask DeliverSnapshotAsync(ReceivedSnapshot snapshot, CancellationToken cancellationToken) =>
        _snapshots.WriteAsync(snapshot, cancellationToken);

    /// <inheritdoc/>
    public void ReportUnreachable(ulong peerId) => _messages.TryWrite(new Message { Type = MessageType.Unreachable, From = peerId });

    /// <inheritdoc/>
    public void ReportSnapshot(ulong peerId, bool success)
    {
        var report = new Message { Type = MessageType.SnapStatus, From = peerId, Reject = !success };
        if (!_messages.TryWrite(report))
        {
            // Raft keeps the peer in snapshot state until it hears the outcome: never lose it.
            _ = Task.Run(async () => await _messages.WriteAsync(report));
        }
    }
}
