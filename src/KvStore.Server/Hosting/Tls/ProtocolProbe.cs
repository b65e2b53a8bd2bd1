using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting.Tls;

/// <summary>
/// Looks at the first byte of a new connection, before any TLS or HTTP processing: a plain-text client on a TLS port
/// (anything but a TLS handshake record) or a TLS ClientHello on a plain-text port is logged once with its address and
/// the connection closed, instead of a silent handshake failure or an HTTP 400 the client cannot read.
/// </summary>
public sealed class ProtocolProbe(ILogger logger)
{
    /// <summary>First byte of every TLS connection: the handshake record type.</summary>
    private const byte TlsHandshakeRecord = 0x16;

    /// <summary>Connection middleware for a TLS port (runs before the TLS handshake).</summary>
    public Func<ConnectionDelegate, ConnectionDelegate> ExpectTls(string port) => next => async context =>
    {
        var first = await PeekAsync(context);
        if (first is null)
        {
            return;
        }

        if (first != TlsHandshakeRecord)
        {
            TlsLog.PlainTextOnTlsPort(logger, context.RemoteEndPoint?.ToString() ?? "unknown", port);
            return;
        }

        await next(context);
    };

    /// <summary>Connection middleware for a plain-text port.</summary>
    public Func<ConnectionDelegate, ConnectionDelegate> ExpectPlainText(string port) => next => async context =>
    {
        var first = await PeekAsync(context);
        if (first is null)
        {
            return;
        }

        if (first == TlsHandshakeRecord)
        {
            TlsLog.TlsOnPlainTextPort(logger, context.RemoteEndPoint?.ToString() ?? "unknown", port);
            return;
        }

        await next(context);
    };

    /// <summary>
    /// The first byte without consuming it; null when the client closed or reset the connection first, or the server is
    /// stopping. A reset before the first byte (a health checker's or a killed peer's connection) is the client's
    /// business, not a server error to log.
    /// </summary>
    private static async Task<byte?> PeekAsync(ConnectionContext context)
    {
        // An idle connection must not hold up a graceful shutdown (Kestrel asks middleware to let go through this token).
        var closing = context.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? CancellationToken.None;
        PipeReader input = context.Transport.Input;
        try
        {
            var result = await input.ReadAsync(closing);
            var buffer = result.Buffer;
            if (buffer.IsEmpty)
            {
                input.AdvanceTo(buffer.Start, buffer.End);
                return null;
            }

            var first = buffer.FirstSpan[0];
            input.AdvanceTo(buffer.Start);
            return first;
        }
        catch (OperationCanceledException) when (closing.IsCancellationRequested)
        {
            return null;
        }
        catch (ConnectionResetException)
        {
            return null;
        }
    }
}
