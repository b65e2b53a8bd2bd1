using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting.Tls;

/// <summary>TLS log messages (event ids 3100-3199).</summary>
internal static partial class TlsLog
{
    [LoggerMessage(EventId = 3100, Level = LogLevel.Information, Message = "{Port} TLS files changed: reloaded certificate {Subject} (expires {NotAfter:u}), {Roots} trusted CA(s), {Revoked} revoked serial(s); new connections use them")]
    public static partial void Reloaded(ILogger logger, string port, string subject, DateTime notAfter, int roots, int revoked);

    [LoggerMessage(EventId = 3101, Level = LogLevel.Warning, Message = "{Port} TLS files changed but could not be loaded ({Reason}); keeping the previous certificate and retrying")]
    public static partial void ReloadFailed(ILogger logger, string port, string reason);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Warning, Message = "TLS handshake from {Remote} on the {Port} port refused: {Reason}")]
    public static partial void Refused(ILogger logger, string remote, string port, string reason);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Warning, Message = "plain-text (non-TLS) connection from {Remote} on the {Port} TLS port: closed")]
    public static partial void PlainTextOnTlsPort(ILogger logger, string remote, string port);

    [LoggerMessage(EventId = 3104, Level = LogLevel.Warning, Message = "TLS handshake from {Remote} on the plain-text {Port} port: closed (use http:// or configure TLS for this port)")]
    public static partial void TlsOnPlainTextPort(ILogger logger, string remote, string port);
}
