using KvStore.Raft;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Peer;

/// <summary>Peer transport log messages (event IDs 5000-5099).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 5000, Level = LogLevel.Information, Message = "peer {PeerId:x16} became active at {Url}")]
    public static partial void PeerActive(ILogger logger, ulong peerId, Uri url);

    [LoggerMessage(EventId = 5001, Level = LogLevel.Warning, Message = "peer {PeerId:x16} became inactive (stream to {Url} ended: {Reason}); reconnecting with backoff")]
    public static partial void PeerInactive(ILogger logger, ulong peerId, Uri url, string reason);

    [LoggerMessage(EventId = 5017, Level = LogLevel.Error, Message = "peer {PeerId:x16} became inactive (stream to {Url} failed unexpectedly); reconnecting with backoff")]
    public static partial void PeerStreamFailed(ILogger logger, ulong peerId, Uri url, Exception exception);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Debug, Message = "connecting to peer {PeerId:x16} at {Url} failed; retrying in {Backoff}")]
    public static partial void ConnectFailed(ILogger logger, ulong peerId, Uri url, TimeSpan backoff, Exception exception);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Error, Message = "peer {PeerId:x16} at {Url} refused this member: {Reason}")]
    public static partial void RefusedByPeer(ILogger logger, ulong peerId, Uri url, string reason);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Error, Message = "{Reason}")]
    public static partial void RejectedIncoming(ILogger logger, string reason);

    [LoggerMessage(EventId = 5005, Level = LogLevel.Warning, Message = "outgoing queue to peer {PeerId:x16} is full ({Capacity} messages); dropping messages and reporting the peer unreachable")]
    public static partial void QueueFull(ILogger logger, ulong peerId, int capacity);

    [LoggerMessage(EventId = 5006, Level = LogLevel.Debug, Message = "dropping a {Type} message to unknown peer {PeerId:x16}")]
    public static partial void UnknownPeer(ILogger logger, MessageType type, ulong peerId);

    [LoggerMessage(EventId = 5007, Level = LogLevel.Error, Message = "dropping a {Type} message to peer {PeerId:x16}: {Size} bytes exceed the peer message limit of {Limit} bytes")]
    public static partial void MessageTooLarge(ILogger logger, MessageType type, ulong peerId, int size, int limit);

    [LoggerMessage(EventId = 5008, Level = LogLevel.Information, Message = "sending snapshot {Index}/{Term} to peer {PeerId:x16}")]
    public static partial void SnapshotSending(ILogger logger, ulong peerId, ulong index, ulong term);

    [LoggerMessage(EventId = 5009, Level = LogLevel.Information, Message = "sent snapshot {Index}/{Term} ({Bytes} bytes) to peer {PeerId:x16}")]
    public static partial void SnapshotSent(ILogger logger, ulong peerId, ulong index, ulong term, long bytes);

    [LoggerMessage(EventId = 5010, Level = LogLevel.Warning, Message = "sending snapshot {Index}/{Term} to peer {PeerId:x16} failed")]
    public static partial void SnapshotSendFailed(ILogger logger, ulong peerId, ulong index, ulong term, Exception exception);

    [LoggerMessage(EventId = 5011, Level = LogLevel.Information, Message = "receiving snapshot {Index}/{Term} from peer {PeerId:x16} into {Path}")]
    public static partial void SnapshotReceiving(ILogger logger, ulong peerId, ulong index, ulong term, string path);

    [LoggerMessage(EventId = 5012, Level = LogLevel.Information, Message = "received snapshot {Index}/{Term} ({Bytes} bytes) from peer {PeerId:x16}")]
    public static partial void SnapshotReceived(ILogger logger, ulong peerId, ulong index, ulong term, long bytes);

    [LoggerMessage(EventId = 5013, Level = LogLevel.Warning, Message = "receiving a snapshot from peer {PeerId:x16} failed")]
    public static partial void SnapshotReceiveFailed(ILogger logger, ulong peerId, Exception exception);

    [LoggerMessage(EventId = 5014, Level = LogLevel.Warning, Message = "dropping a {Type} message from peer {PeerId:x16}: {Reason}")]
    public static partial void DroppedIncoming(ILogger logger, MessageType type, ulong peerId, string reason);

    [LoggerMessage(EventId = 5015, Level = LogLevel.Debug, Message = "stream from peer {PeerId:x16} ended")]
    public static partial void IncomingStreamEnded(ILogger logger, ulong peerId, Exception? exception);

    [LoggerMessage(EventId = 5016, Level = LogLevel.Warning, Message = "a snapshot to peer {PeerId:x16} is already being sent; dropping snapshot {Index}")]
    public static partial void SnapshotBusy(ILogger logger, ulong peerId, ulong index);

    [LoggerMessage(EventId = 5017, Level = LogLevel.Information, Message = "peer {PeerId:x16} added with URLs {Urls}")]
    public static partial void PeerAdded(ILogger logger, ulong peerId, string urls);

    [LoggerMessage(EventId = 5018, Level = LogLevel.Information, Message = "peer {PeerId:x16} removed")]
    public static partial void PeerRemoved(ILogger logger, ulong peerId);

    [LoggerMessage(EventId = 5019, Level = LogLevel.Information, Message = "peer {PeerId:x16} URLs updated to {Urls}")]
    public static partial void PeerUpdated(ILogger logger, ulong peerId, string urls);

    [LoggerMessage(EventId = 5020, Level = LogLevel.Information, Message = "peer {PeerId:x16} at {Url} does not accept the framed stream (a member of an earlier version); using the gRPC stream")]
    public static partial void FramedStreamUnsupported(ILogger logger, ulong peerId, Uri url);
}
