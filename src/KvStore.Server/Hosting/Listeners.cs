using System.Net;
using KvStore.Server.Hosting.Http2Authority;
using KvStore.Server.Hosting.Tls;
using KvStore.Server.Options;
using KvStore.Server.Peer;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Hosting;

/// <summary>Which kind of port a connection arrived on.</summary>
public enum PortKind
{
    Client,
    Peer,
    Metrics,
}

/// <summary>
/// Kestrel endpoints from the --listen-*-urls flags: one endpoint per URL (a host name binds every address it resolves to,
/// "localhost" both loopbacks), https with the port's TLS (<see cref="ServerTls"/>: reloaded certificates, TLS versions and
/// cipher suites, client-certificate checks).
/// Plain http client endpoints speak HTTP/2 with prior knowledge (gRPC's h2c) and HTTP/1.1 on the same port, as etcd
/// does (see <see cref="Http1Forwarder"/>); metrics endpoints speak HTTP/1.1.
/// </summary>
public sealed class Listeners
{
    private readonly Dictionary<int, PortKind> _kinds = [];
    private readonly Http1Forwarder _forwarder;
    private readonly ILogger _tlsLogger;
    private readonly ProtocolProbe _probe;
    private Http2AuthorityFilter? _authority;

    public Listeners(Http1Forwarder forwarder, ILogger? tlsLogger = null)
    {
        _forwarder = forwarder;
        _tlsLogger = tlsLogger ?? NullLogger.Instance;
        _probe = new ProtocolProbe(_tlsLogger);
    }

    /// <summary>The kind of port each listening port number serves.</summary>
    public IReadOnlyDictionary<int, PortKind> Kinds => _kinds;

    /// <summary>Adds the client, peer and metrics endpoints to Kestrel.</summary>
    public void Configure(KestrelServerOptions kestrel, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(options);
        kestrel.AddServerHeader = false;
        kestrel.Limits.MaxRequestBodySize = null;
        kestrel.Limits.Http2.MaxStreamsPerConnection = (int)Math.Min(options.MaxConcurrentStreams, int.MaxValue);
        kestrel.Limits.Http2.InitialConnectionWindowSize = 8 * 1024 * 1024;
        kestrel.Limits.Http2.InitialStreamWindowSize = 4 * 1024 * 1024;
        kestrel.Limits.Http2.MaxFrameSize = 1024 * 1024;
        kestrel.Limits.MinRequestBodyDataRate = null;
        kestrel.Limits.MinResponseDataRate = null;

        // Client ports accept URL-shaped :authority values as etcd does (see Http2AuthorityFilter).
        _authority = new Http2AuthorityFilter(kestrel.Limits.Http2.HeaderTableSize);

        var policy = TlsPolicy.From(options);
        var clientCert = options.ClientTls.Enabled ? new ServerTls(options.ClientTls, policy, "client", _tlsLogger) : null;
        var peerCert = options.PeerTls.Enabled ? new ServerTls(options.PeerTls, policy, "peer", _tlsLogger) : null;
        foreach (var url in options.ListenClientUrls)
        {
            Add(kestrel, url, PortKind.Client, clientCert);
        }

        foreach (var url in options.ListenPeerUrls)
        {
            Add(kestrel, url, PortKind.Peer, peerCert);
        }

        foreach (var url in options.ListenMetricsUrls)
        {
            Add(kestrel, url, PortKind.Metrics, clientCert);
        }

        // The HTTP/1.1 side of the cleartext client ports (see Http1Forwarder).
        if (File.Exists(_forwarder.SocketPath))
        {
            File.Delete(_forwarder.SocketPath);
        }

        kestrel.ListenUnixSocket(_forwarder.SocketPath, listen => listen.Protocols = HttpProtocols.Http1);
    }

    private void Add(KestrelServerOptions kestrel, Uri url, PortKind kind, ServerTls? tls)
    {
        var port = url.Port;
        if (_kinds.TryGetValue(port, out var existing) && existing != kind)
        {
            throw new OptionsException($"port {port} is listed for both {existing} and {kind} traffic");
        }

        _kinds[port] = kind;
        var https = url.Scheme == "https";
        void ConfigureEndpoint(ListenOptions listen)
        {
            var portName = kind.ToString().ToLowerInvariant();
            if (https && tls is not null)
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.Use(_probe.ExpectTls(portName));
                listen.UseHttps(tls.ToCallbackOptions());
                if (kind == PortKind.Client)
                {
                    listen.Use(_authority!.Middleware);
                }
                else if (kind == PortKind.Peer)
                {
                    listen.UsePeerStreams();
                }
            }
            else if (kind == PortKind.Metrics)
            {
                listen.Protocols = HttpProtocols.Http1;
            }
            else if (kind == PortKind.Peer)
            {
                listen.Protocols = HttpProtocols.Http2;
                listen.Use(_probe.ExpectPlainText(portName));
                listen.UsePeerStreams();
            }
            else
            {
                // Cleartext: HTTP/2 (h2c) served here, HTTP/1.1 relayed to the internal endpoint.
                listen.Protocols = HttpProtocols.Http2;
                listen.Use(_probe.ExpectPlainText(portName));
                listen.Use(_forwarder.Middleware);
                listen.Use(_authority!.Middleware);
            }
        }

        var host = url.DnsSafeHost;
        if (host == "localhost")
        {
            kestrel.ListenLocalhost(port, ConfigureEndpoint);
        }
        else if (IPAddress.TryParse(host, out var address))
        {
            kestrel.Listen(address, port, ConfigureEndpoint);
        }
        else
        {
            foreach (var resolved in Dns.GetHostAddresses(host))
            {
                kestrel.Listen(resolved, port, ConfigureEndpoint);
            }
        }
    }
}
