using System.Net;
using System.Net.Sockets;
using KvStore.Server.Options;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;

namespace KvStore.Server.Hosting;

/// <summary>
/// The listening sockets of the --listen-*-urls, bound when the process starts, before the storage is opened, and
/// handed to Kestrel when it starts (see <see cref="Take"/>).
/// Why: a client (or peer) that dials while the member opens its storage finds the port listening, its connection
/// waits in the backlog and is served as soon as the member is ready, as with etcd, which binds its ports first.
/// A refused connection instead puts a gRPC client into its reconnect backoff (a second at first in grpc-go), so
/// etcdctl and the API server saw a member a second or more later than it was ready.
/// </summary>
public sealed class ListenSockets : IDisposable
{
    /// <summary>Kestrel's default backlog.</summary>
    private const int Backlog = 512;

    private readonly Dictionary<IPEndPoint, Socket> _bound = [];

    private ListenSockets()
    {
    }

    /// <summary>
    /// Binds and listens on every address of the client, peer and metrics URLs. A host name binds every address it
    /// resolves to; "localhost" binds 127.0.0.1 and, where the host has IPv6, ::1 (as Kestrel's ListenLocalhost).
    /// </summary>
    /// <exception cref="SocketException">An address cannot be bound (in use, not local).</exception>
    public static ListenSockets Bind(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var sockets = new ListenSockets();
        try
        {
            foreach (var url in options.ListenClientUrls.Concat(options.ListenPeerUrls).Concat(options.ListenMetricsUrls))
            {
                sockets.BindUrl(url);
            }

            return sockets;
        }
        catch
        {
            sockets.Dispose();
            throw;
        }
    }

    /// <summary>
    /// For <see cref="SocketTransportOptions.CreateBoundListenSocket"/>: the socket bound here for
    /// <paramref name="endpoint"/> (Kestrel then owns it), or a new one where none was.
    /// </summary>
    public Socket Take(EndPoint endpoint)
    {
        lock (_bound)
        {
            if (endpoint is IPEndPoint ip && _bound.Remove(ip, out var socket))
            {
                return socket;
            }
        }

        return SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
    }

    /// <summary>Closes the sockets Kestrel did not take (a start that failed before it listened).</summary>
    public void Dispose()
    {
        lock (_bound)
        {
            foreach (var socket in _bound.Values)
            {
                socket.Dispose();
            }

            _bound.Clear();
        }
    }

    private void BindUrl(Uri url)
    {
        var host = url.DnsSafeHost;
        if (host == "localhost")
        {
            BindEndpoint(new IPEndPoint(IPAddress.Loopback, url.Port));
            try
            {
                BindEndpoint(new IPEndPoint(IPAddress.IPv6Loopback, url.Port));
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.AddressFamilyNotSupported or SocketError.AddressNotAvailable)
            {
                // No IPv6 on this host: 127.0.0.1 alone, as Kestrel does.
            }

            return;
        }

        var addresses = IPAddress.TryParse(host, out var address) ? [address] : Dns.GetHostAddresses(host);
        foreach (var resolved in addresses)
        {
            BindEndpoint(new IPEndPoint(resolved, url.Port));
        }
    }

    private void BindEndpoint(IPEndPoint endpoint)
    {
        if (_bound.ContainsKey(endpoint))
        {
            return;
        }

        var socket = SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
        try
        {
            socket.Listen(Backlog);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _bound[endpoint] = socket;
    }
}
