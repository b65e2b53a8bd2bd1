using System.Diagnostics.CodeAnalysis;
using Grpc.AspNetCore.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Peer;

/// <summary>Hosting of the peer transport: registration and mapping on the peer listener only.</summary>
public static class PeerTransportExtensions
{
    /// <summary>What gRPC's MapGrpcService reaches by reflection on a service type (kept by the trimmer of a native AOT build).</summary>
    private const DynamicallyAccessedMemberTypes GrpcServiceMembers =
        DynamicallyAccessedMemberTypes.PublicConstructors | DynamicallyAccessedMemberTypes.PublicMethods | DynamicallyAccessedMemberTypes.NonPublicMethods;

    /// <summary>
    /// Registers <see cref="PeerTransport"/> (a singleton built from the two factories), gRPC, the peer service's receive
    /// limit (<see cref="PeerTransportOptions.MaxReceiveBytes"/>) and a hosted service that stops the transport — ending
    /// long-lived incoming streams — when the host begins to stop.
    /// </summary>
    public static IServiceCollection AddPeerTransport(
        this IServiceCollection services,
        Func<IServiceProvider, PeerTransportOptions> options,
        Func<IServiceProvider, IPeerTransportHandler> handler)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        services.AddGrpc();
        services.AddSingleton(sp => new PeerTransport(options(sp), handler(sp), sp.GetService<ILoggerFactory>()));
        services.AddOptions<GrpcServiceOptions<RaftPeerService>>().Configure<PeerTransport>((grpc, transport) =>
        {
            grpc.MaxReceiveMessageSize = transport.Options.MaxReceiveBytes;
            grpc.MaxSendMessageSize = null;
        });
        services.AddHostedService<PeerTransportLifetime>();
        return services;
    }

    /// <summary>
    /// Serves the framed peer stream on a peer listener (add it after <c>UseHttps</c> on a TLS listener): a connection
    /// that opens with the stream's preface is handed to the <see cref="PeerTransport"/>, any other goes on to HTTP/2.
    /// </summary>
    public static ListenOptions UsePeerStreams(this ListenOptions listen)
    {
        ArgumentNullException.ThrowIfNull(listen);
        listen.Use(next => context => listen.ApplicationServices.GetRequiredService<PeerTransport>().AcceptAsync(context, next));
        return listen;
    }

    /// <summary>
    /// Maps <see cref="RaftPeerService"/> so that it answers only connections for which <paramref name="isPeerConnection"/>
    /// is true (decide by the local port — <c>HttpContext.Connection.LocalPort</c> — never by the Host header, which the
    /// caller chooses). Elsewhere it looks like an unknown service (gRPC status UNIMPLEMENTED).
    /// </summary>
    public static GrpcServiceEndpointConventionBuilder MapPeerTransport(this IEndpointRouteBuilder endpoints, Func<HttpContext, bool> isPeerConnection) =>
        endpoints.MapGrpcServiceOnPeerPort<RaftPeerService>(isPeerConnection);

    /// <summary>
    /// Maps gRPC service <typeparamref name="TService"/> so that it answers only connections for which
    /// <paramref name="isPeerConnection"/> is true; on any other listener it looks like an unknown service
    /// (UNIMPLEMENTED). Every peer-only service (raft messages, cluster info for joining members) is mapped this way.
    /// </summary>
    public static GrpcServiceEndpointConventionBuilder MapGrpcServiceOnPeerPort<[DynamicallyAccessedMembers(GrpcServiceMembers)] TService>(this IEndpointRouteBuilder endpoints, Func<HttpContext, bool> isPeerConnection)
        where TService : class
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(isPeerConnection);
        var builder = endpoints.MapGrpcService<TService>();
        builder.Add(endpoint =>
        {
            var inner = endpoint.RequestDelegate;
            if (inner is not null)
            {
                endpoint.RequestDelegate = context => isPeerConnection(context) ? inner(context) : Unimplemented(context);
            }
        });
        return builder;
    }

    /// <summary>Maps <see cref="RaftPeerService"/> for connections arriving on one of <paramref name="peerPorts"/> only.</summary>
    public static GrpcServiceEndpointConventionBuilder MapPeerTransport(this IEndpointRouteBuilder endpoints, IEnumerable<int> peerPorts)
    {
        ArgumentNullException.ThrowIfNull(peerPorts);
        var ports = peerPorts.ToHashSet();
        return endpoints.MapPeerTransport(context => ports.Contains(context.Connection.LocalPort));
    }

    private static Task Unimplemented(HttpContext context)
    {
        // A trailers-only gRPC response, as for a service that does not exist.
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/grpc";
        context.Response.Headers["grpc-status"] = "12";
        context.Response.Headers["grpc-message"] = "Service is unimplemented.";
        return Task.CompletedTask;
    }

    /// <summary>Creates the transport at start (so senders connect early) and stops it first thing at shutdown.</summary>
    private sealed class PeerTransportLifetime(PeerTransport transport, IHostApplicationLifetime lifetime) : IHostedService
    {
        private CancellationTokenRegistration _registration;

        public Task StartAsync(CancellationToken cancellationToken)
        {
            _registration = lifetime.ApplicationStopping.Register(transport.BeginStop);
            return Task.CompletedTask;
        }

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            await _registration.DisposeAsync();
            await transport.DisposeAsync();
        }
    }
}
