using KvStore.Server.Apply;
using KvStore.Server.Identity;
using KvStore.Server.Monitoring;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Peer;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Raft;
using KvStore.Storage.Wal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Replication;

/// <summary>Hosting of the replicated write path: raft log, <see cref="RaftHost"/>, peer transport.</summary>
public static class ReplicationServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="RaftLogStore"/> (opened on <paramref name="wal"/>), <see cref="RaftHost"/> as the
    /// <see cref="IProposer"/> and hosted service, and the peer transport with the host as its handler. Register before
    /// the watch and lease services (the host recovers first).
    /// </summary>
    public static IServiceCollection AddReplication(this IServiceCollection services, ServerOptions options, MemberIdentity identity, WriteAheadLog wal, string memberDir)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(identity);
        services.AddSingleton(sp => RaftLogStore.Open(wal, sp.GetRequiredService<ILoggerFactory>().CreateLogger("kvstore.raftlog")));
        services.AddSingleton(sp =>
        {
            var host = new RaftHost(
            options,
            identity,
            sp.GetRequiredService<MvccStore>(),
            sp.GetRequiredService<RaftLogStore>(),
            _ => sp.GetRequiredService<Applier>(),
            Path.Combine(memberDir, "snap", "outgoing"),
            sp.GetRequiredService<NodeState>(),
            sp.GetRequiredService<ServerMetrics>(),
            () => sp.GetRequiredService<PeerTransport>(),
            sp.GetRequiredService<ILogger<RaftHost>>(),
            sp.GetRequiredService<IHostApplicationLifetime>());
            host.SnapshotInstalled += store => ReloadDerivedState(sp, store);
            return host;
        });
        services.AddSingleton<IProposer>(sp => sp.GetRequiredService<RaftHost>());
        services.AddSingleton<ILinearizableReads>(sp => sp.GetRequiredService<RaftHost>());
        services.AddSingleton<IReplicationProgress>(sp => sp.GetRequiredService<RaftHost>());
        services.AddSingleton(sp => sp.GetRequiredService<RaftHost>().Members);
        services.AddSingleton<RequireLeaderInterceptor>();
        services.AddPeerTransport(
            sp => new PeerTransportOptions
            {
                ClusterId = identity.ClusterId,
                LocalMemberId = identity.MemberId,
                SnapshotDirectory = Path.Combine(memberDir, "snap", "incoming"),
                MaxMessageBytes = Math.Max(16 << 20, 2 * options.GrpcMaxReceiveBytes),
                Tls = PeerTls(options, sp.GetRequiredService<ILoggerFactory>().CreateLogger("kvstore.tls")),
                Metrics = sp.GetRequiredService<ServerMetrics>(),
            },
            sp => sp.GetRequiredService<RaftHost>());
        services.AddHostedService(sp => sp.GetRequiredService<RaftHost>());
        return services;
    }

    /// <summary>
    /// After a snapshot from the leader replaced the store's state: the alarms and the auth store are reloaded from it,
    /// and every <see cref="IStoreRestoredHandler"/> rebuilds from it (the lessor its leases, as at start; the watch hub
    /// resyncs every watcher, cancelling those whose history was compacted away with the compact revision, as etcd does).
    /// </summary>
    private static void ReloadDerivedState(IServiceProvider services, MvccStore store)
    {
        services.GetService<AlarmState>()?.Load(store);
        services.GetService<Auth.AuthStore>()?.Load(store);
        foreach (var handler in services.GetServices<IStoreRestoredHandler>())
        {
            handler.OnStoreRestored(store);
        }
    }

    /// <summary>Maps the peer services (raft transport, cluster info for joining members) on the peer listeners only.</summary>
    public static void MapReplication(this IEndpointRouteBuilder endpoints, Func<HttpContext, bool> isPeerConnection)
    {
        endpoints.MapPeerTransport(isPeerConnection);
        ClusterInfoService.MapClusterInfo(endpoints, isPeerConnection);
    }

    /// <summary>
    /// The client side of peer TLS (null for plain-HTTP peer URLs): --peer-client-cert-file (else --peer-cert-file)
    /// presented to peers, --peer-trusted-ca-file checked, both re-read when they change.
    /// </summary>
    public static PeerTlsOptions? PeerTls(ServerOptions options, ILogger? logger = null)
    {
        var https = options.InitialAdvertisePeerUrls.Concat(options.ListenPeerUrls).Any(u => u.Scheme == "https");
        if (!https || !options.PeerTls.Enabled)
        {
            return null;
        }

        return Outgoing(options, options.PeerTls, "outgoing peer", logger);
    }

    /// <summary>
    /// The client side of this member's calls to other members' client URLs (HashKV for the corruption checks): with
    /// client TLS configured, --client-cert-file (else --cert-file) presented, --trusted-ca-file checked; null otherwise.
    /// </summary>
    public static PeerTlsOptions? ClientTls(ServerOptions options, ILogger? logger = null) =>
        options.ClientTls.Enabled ? Outgoing(options, options.ClientTls, "outgoing client", logger) : null;

    private static PeerTlsOptions Outgoing(ServerOptions options, TlsOptions port, string name, ILogger? logger)
    {
        var policy = TlsPolicy.From(options);
        var material = new Hosting.Tls.TlsMaterial(port.Outgoing(), name, logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        return new PeerTlsOptions(material) { Protocols = policy.Protocols, CipherSuites = policy.CipherSuitesPolicy, SkipVerification = port.AutoTls };
    }
}
