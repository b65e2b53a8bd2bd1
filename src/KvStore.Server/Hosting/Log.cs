using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting;

/// <summary>The server's log messages. Event IDs: 1000-1099 hosting, 1100-1199 node loop, 1200-1299 apply, 1300-1399 api.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "{Warning}")]
    public static partial void ConfigWarning(ILogger logger, string warning);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Information, Message = "stopping: draining proposals, checkpointing the store")]
    public static partial void Stopping(ILogger logger);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information, Message = "stopped cleanly")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Critical, Message = "fatal error, exiting")]
    public static partial void Fatal(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Information, Message = "notified systemd: READY=1")]
    public static partial void SystemdReady(ILogger logger);

    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "recovered store at consistent index {ConsistentIndex}, revision {Revision}; replaying {Count} WAL entries up to index {LastIndex}; term {Term}")]
    public static partial void Recovered(ILogger logger, ulong consistentIndex, long revision, int count, ulong lastIndex, ulong term);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Information, Message = "checkpointed the store at index {Index}; WAL released before it")]
    public static partial void Checkpointed(ILogger logger, ulong index);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Critical, Message = "node loop failed; the member stops")]
    public static partial void NodeLoopFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1200, Level = LogLevel.Error, Message = "applying entry {Index} failed")]
    public static partial void ApplyFailed(ILogger logger, ulong index, Exception exception);

    [LoggerMessage(EventId = 1300, Level = LogLevel.Warning, Message = "request failed: {Method}")]
    public static partial void RequestFailed(ILogger logger, string method, Exception exception);
}
