using System.Security.Cryptography.X509Certificates;
using KvStore.Server.Api;
using KvStore.Server.Apply;
using KvStore.Server.Hosting;
using KvStore.Server.Monitoring;
using KvStore.Server.Identity;
using KvStore.Server.Lease;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Peer;
using KvStore.Server.Watch;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Raft;
using KvStore.Storage.Wal;
using Microsoft.AspNetCore.Builder;
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
        services.AddSingleton<RequireLeaderInterceptor>();
        services.AddPeerTransport(
            sp => new PeerTransportOptions
            {
                ClusterId = identity.ClusterId,
                LocalMemberId = identity.MemberId,
                SnapshotDirectory = Path.Combine(memberDir, "snap", "incoming"),
                MaxMessageBytes = Math.Max(16 << 20, 2 * options.GrpcMaxReceiveBytes),
                Tls = PeerTls(options),
                Metrics = sp.GetRequiredService<ServerMetrics>(),
            },
            sp => sp.GetRequiredService<RaftHost>());
        services.AddHostedService(sp => sp.GetRequiredService<RaftHost>());
        return services;
    }

    /// <summary>
    /// After a snapshot from the leader replaced the store's state: the alarms and the auth store are reloaded from it, the lessor rebuilds its leases from the store (as at
    /// start) and the watch hub resyncs every watcher from the store (those whose history was compacted away are
    /// cancelled with the compact revision, as etcd does).
    /// </summary>
    private static void ReloadDerivedState(IServiceProvider services, MvccStore store)
    {
        services.GetService<AlarmState>()?.Load(store);
        services.GetService<Auth.AuthStore>()?.Load(store);
        services.GetService<Lessor>()?.Reload(new MvccLeaseRecoverySource(store));
        services.GetService<WatchHub>()?.OnRestored(store.CurrentRevision);
    }

    /// <summary>Maps the peer services (raft transport, cluster info for joining members) on the peer listeners only.</summary>
    public static void MapReplication(this IEndpointRouteBuilder endpoints, Listeners listeners)
    {
        ArgumentNullException.ThrowIfNull(listeners);
        endpoints.MapPeerTransport(context => listeners.Kinds.TryGetValue(context.Connection.LocalPort, out var kind) && kind == PortKind.Peer);
        ClusterInfoService.MapClusterInfo(endpoints, context => listeners.Kinds.TryGetValue(context.Connection.LocalPort, out var kind) && kind == PortKind.Peer);
    }

    /// <summary>The client side of peer TLS (null for plain-HTTP peer URLs).</summary>
    public static PeerTlsOptions? PeerTls(ServerOptions options)
    {
        var https = options.InitialAdvertisePeerUrls.Concat(options.ListenPeerUrls).Any(u => u.Scheme == "https");
        if (!https || !options.PeerTls.Enabled)
        {
            return null;
        }

        var certificate = X509Certificate2.CreateFromPemFile(options.PeerTls.CertFile, options.PeerTls.KeyFile);
        var roots = new X509Certificate2Collection();
        if (options.PeerTls.TrustedCaFile.Length > 0)
        {
            roots.ImportFromPemFile(options.PeerTls.TrustedCaFile);
        }

        var policy = Hosting.Tls.TlsPolicy.From(options);
        return new PeerTlsOptions(certificate, roots) { Protocols = policy.Protocols, CipherSuites = policy.CipherSuitesPolicy };
    }
}
