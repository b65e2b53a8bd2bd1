using Microsoft.Extensions.Logging;

namespace KvStore.Server.Watch;

/// <summary>Watch log messages (event IDs 4100-4199).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 4100, Level = LogLevel.Debug, Message = "Watcher {WatchId} fell behind at revision {Revision}; catching up from the store")]
    public static partial void WatcherFellBehind(ILogger logger, long watchId, long revision);

    [LoggerMessage(EventId = 4101, Level = LogLevel.Debug, Message = "History of watcher {WatchId} was compacted while reading it")]
    public static partial void HistoryCompacted(ILogger logger, long watchId, Exception exception);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Error, Message = "Watch catch-up pass failed")]
    public static partial void SyncFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Information, Message = "Store restored from a snapshot at revision {Revision}: {Moved} synced watchers moved to unsynced ({Unsynced} unsynced) to catch up from it")]
    public static partial void WatchersRestored(ILogger logger, int moved, int unsynced, long revision);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Debug, Message = "Watch stream ended")]
    public static partial void StreamEnded(ILogger logger, Exception exception);
}
