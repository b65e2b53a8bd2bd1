using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using KvStore.Server.Hosting.Http2Authority;
using Microsoft.AspNetCore.Connections.Features;

namespace KvStore.Server.Hosting;

/// <summary>
/// Lets one cleartext port serve gRPC (HTTP/2 with prior knowledge, "h2c") and plain HTTP/1.1 (curl /health,
/// /metrics), as etcd's client port does. Kestrel cannot negotiate both on a cleartext endpoint (no ALPN: it would
/// serve HTTP/1.1 only), so the public cleartext endpoint is HTTP/2-only and this connection middleware peeks at the
/// first bytes: the HTTP/2 connection preface goes on to Kestrel's HTTP/2 pipeline; anything else is relayed byte for
/// byte to an internal HTTP/1.1-only Kestrel endpoint on a Unix socket. Only the low-volume HTTP/1.1 traffic pays
/// for the relay; gRPC is served directly.
/// </summary>
public sealed class Http1Forwarder : IDisposable
{
    public Http1Forwarder()
    {
        SocketPath = Path.Combine(Path.GetTempPath(), $"kvstore-{Environment.ProcessId}-{Guid.NewGuid():N}.http1.sock");
    }

    /// <summary>The internal HTTP/1.1 endpoint's socket file.</summary>
    public string SocketPath { get; }

    /// <summary>The connection middleware for a cleartext HTTP/2 endpoint.</summary>
    public ConnectionDelegate Middleware(ConnectionDelegate next) => async context =>
    {
        // A connection that never sends a byte must not hold up a graceful shutdown: Kestrel asks connection
        // middleware to close through ConnectionClosedRequested, and waits for it until the shutdown timeout.
        var closing = context.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? CancellationToken.None;
        bool isHttp2;
        try
        {
            isHttp2 = await Http2Preface.StartsWithAsync(context.Transport.Input, closing);
        }
        catch (OperationCanceledException) when (closing.IsCancellationRequested)
        {
            return;
        }

        if (isHttp2)
        {
            await next(context);
            return;
        }

        await RelayAsync(context);
    };

    public void Dispose()
    {
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
            // Best effort: a stale socket file in /tmp is harmless.
        }
    }

    private async Task RelayAsync(ConnectionContext context)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), context.ConnectionClosed);
        await using var backend = new NetworkStream(socket, ownsSocket: false);

        var toBackend = Task.Run(async () =>
        {
            try
            {
                await context.Transport.Input.CopyToAsync(backend, context.ConnectionClosed);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or SocketException or ConnectionResetException)
            {
                // The client went away.
            }
            finally
            {
                try
                {
                    socket.Shutdown(SocketShutdown.Send);
                }
                catch (SocketException)
                {
                    // Already closed.
                }
            }
        });

        try
        {
            await backend.CopyToAsync(context.Transport.Output, context.ConnectionClosed);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or SocketException or ConnectionResetException)
        {
            // Either side closed.
        }

        await context.Transport.Output.CompleteAsync();
        context.Abort();
        await toBackend;
    }
}
