using Microsoft.Extensions.Logging;

namespace KvStore.Server.Api;

/// <summary>The client API's log messages (event IDs 1300-1399).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1301, Level = LogLevel.Warning, Message = "backend quota {Quota} bytes exceeded (db size in use {DbSize}, request adds {Cost}); proposing the NOSPACE alarm for member {MemberId}")]
    public static partial void QuotaExceeded(ILogger logger, long quota, long dbSize, long cost, string memberId);
}
