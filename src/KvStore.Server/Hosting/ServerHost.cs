using System.Globalization;
using System.Net.Sockets;
using KvStore.Server.Api;
using KvStore.Server.Apply;
using KvStore.Server.Auth;
using KvStore.Server.Backup;
using KvStore.Server.Concurrency;
using KvStore.Server.Http;
using KvStore.Server.Identity;
using KvStore.Server.Lease;
using KvStore.Server.Monitoring;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Server.Watch;
using KvStore.Storage;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Wal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Serilog;
using Serilog.Extensions.Logging;

namespace KvStore.Server.Hosting;

/// <summary>
/// The composition root: data directory, storage, identity, services, listeners; runs until SIGTERM/SIGINT.
/// Data directory layout (docs/configuration.md): &lt;data-dir&gt;/member/{identity.json, kvstore.lock, wal/, kv/}.
/// </summary>
public static class ServerHost
{
    /// <summary>Thread-pool threads the pool starts at once, without waiting for its starvation check.</summary>
    private const int MinThreadPoolThreads = 32;

    /// <summary>Runs the member; returns the process exit code.</summary>
    public static async Task<int> RunAsync(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);

        // First of all, before logging and storage are set up: a client that dials meanwhile waits in the backlog
        // instead of being refused and backing off.
        ListenSockets sockets;
        try
        {
            sockets = ListenSockets.Bind(options);
        }
        catch (SocketException e)
        {
            await Console.Error.WriteLineAsync($"listen failed: {e.Message}");
            return 1;
        }

        using var listenSockets = sockets;
        ReserveThreadPoolThreads();
        using var serilog = Logging.Create(options);
        using var loggerFactory = LoggerFactory.Create(b => b.AddSerilog(serilog));
        var logger = loggerFactory.CreateLogger("kvstore");
        foreach (var warning in options.Warnings)
        {
            Log.ConfigWarning(logger, warning);
        }

        var memberDir = Path.Combine(options.EffectiveDataDir, "member");
        FileStream dataDirLock;
        MemberIdentity identity;
        try
        {
            // A first start creates data-dir/member: its entry in the data dir must be synced, or a power cut loses the member.
            DurableDirectory.Create(memberDir);
            dataDirLock = LockDataDir(memberDir);
            Tls.AutoTls.Apply(options, logger);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or OptionsException or System.Security.Cryptography.CryptographicException)
        {
            await Console.Error.WriteLineAsync($"cannot use data directory {options.EffectiveDataDir}: {e.Message}");
            return 1;
        }

        try
        {
            // Stored identity wins; a first start with --initial-cluster-state existing asks the running cluster.
            identity = await ClusterBootstrap.LoadOrJoinAsync(memberDir, options, ReplicationServiceCollectionExtensions.PeerTls(options, logger), logger, CancellationToken.None);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or OptionsException)
        {
            await dataDirLock.DisposeAsync();
            await Console.Error.WriteLineAsync($"cannot use data directory {options.EffectiveDataDir}: {e.Message}");
            return 1;
        }
        catch (ClusterJoinException e)
        {
            await dataDirLock.DisposeAsync();
            Log.Fatal(logger, e);
            await Console.Error.WriteLineAsync(e.Message);
            return 1;
        }

        await using var lockHandle = dataDirLock;
        LogStarting(logger, options, identity, memberDir);

        MvccStore store;
        WriteAheadLog wal;
        try
        {
            var walDir = options.WalDir.Length > 0 ? options.WalDir : Path.Combine(memberDir, "wal");
            wal = WriteAheadLog.Open(walDir, loggerFactory.CreateLogger("kvstore.wal"));

            // FasterLog's recovery reads through two page-sized pinned buffers and drops them. Pinned memory is freed
            // only by a full collection, and until then it stays resident; collected now, its space is where the
            // store's first pages go (8 MiB less resident memory on an empty member).
            GC.Collect();
            store = MvccStore.Open(
                new MvccStoreOptions { DataDirectory = Path.Combine(memberDir, "kv"), LogHoldsEveryWrite = wal.Replay().HoldsEveryEntry },
                loggerFactory.CreateLogger("kvstore.mvcc"));
        }
        catch (Exception e) when (e is WalCorruptException or InvalidDataException)
        {
            // A damaged WAL or store: the message names the file; the member stops instead of serving from it.
            Log.Fatal(logger, e);
            await Console.Error.WriteLineAsync(e.Message);
            return 1;
        }

        try
        {
            if (options.InitialCorruptCheck && !await Corruption.InitialHashCheck.PassesAsync(store, identity.MemberId, options, logger))
            {
                await Console.Error.WriteLineAsync($"{EtcdLog.Id(identity.MemberId)} found data inconsistency with peers");
                return 1;
            }

            var app = Build(options, identity, store, wal, serilog, listenSockets);
            try
            {
                await app.StartAsync();
            }
            catch (IOException e) when (e.InnerException is SocketException || e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase))
            {
                Log.Fatal(logger, e);
                await Console.Error.WriteLineAsync($"listen failed: {e.Message}");
                await app.DisposeAsync();
                return 1;
            }

            // Starting allocates far more than a member keeps (the store's recovery reads, the host's and gRPC's set-up),
            // and the collector would give it back only once the member is idle after much more allocation: about a
            // sixth of an empty member's resident memory. One compacting collection now, before the first requests
            // arrive in earnest, returns it (tens of milliseconds on an empty member).
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            LogServing(logger, options);
            EtcdLog.Info(logger, "ready to serve client requests", ("local-member-id", EtcdLog.Id(identity.MemberId)));
            await app.WaitForShutdownAsync();
            await app.DisposeAsync();
            Log.Stopped(logger);
            return Environment.ExitCode;
        }
        finally
        {
            await wal.DisposeAsync();
            store.Dispose();
        }
    }

    /// <summary>Builds the web application (also used by integration tests).</summary>
    /// <param name="listenSockets">Sockets bound before the storage was opened; null: Kestrel binds its own.</param>
    public static WebApplication Build(ServerOptions options, MemberIdentity identity, MvccStore store, WriteAheadLog wal, Serilog.ILogger serilog, ListenSockets? listenSockets = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var memberDir = Path.Combine(options.EffectiveDataDir, "member");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        // Serilog as a provider behind the framework's filters rather than in place of the logger factory: the hosting
        // layer opens a log scope and starts an Activity for every request whenever its logger is enabled at all, and
        // only a filter can turn that logger off (its own messages are below the Warning floor set in Logging anyway).
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Trace);
        builder.Logging.AddSerilog(serilog, dispose: false);
        builder.Logging.AddFilter<SerilogLoggerProvider>("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(15));

        var forwarder = new Http1Forwarder();
        var listeners = new Listeners(forwarder, new Serilog.Extensions.Logging.SerilogLoggerFactory(serilog).CreateLogger("kvstore.tls"));
        builder.WebHost.ConfigureKestrel(k => listeners.Configure(k, options));
        builder.WebHost.UseSockets(o =>
        {
            // Kestrel's transport runs its HTTP/2 frame reading and socket sends on the thread whose I/O completed,
            // instead of handing each to its I/O queue and the thread pool: a single client's put went from 11 to 8
            // thread-pool work items. Application code stays off those threads: HTTP/2 streams are started on the
            // thread pool by Kestrel itself, and HTTP/1.x requests by OnThreadPool below.
            o.UnsafePreferInlineScheduling = true;
            if (listenSockets is not null)
            {
                o.CreateBoundListenSocket = listenSockets.Take;
            }
        });

        var services = builder.Services;
        services.AddSingleton(options);
        services.AddSingleton(identity);
        services.AddSingleton(store);
        services.AddSingleton(wal);
        services.AddSingleton(listeners);
        services.AddSingleton(forwarder);
        services.AddSingleton<NodeState>();
        services.AddSingleton(new ServerMetrics(options.Metrics == "extensive" ? MetricsLevel.Extensive : MetricsLevel.Basic));
        services.AddSingleton<HeaderFactory>();
        services.AddSingleton<AlarmState>();
        services.AddSingleton<Quota>();
        services.AddAuth(options);
        services.AddSingleton<Applier>();
        services.AddSingleton<ILeaderStatus, NodeLeaderStatus>();
        if (AutoCompactionPolicy.From(options.AutoCompactionMode, options.AutoCompactionRetention) is { } autoCompaction)
        {
            services.AddSingleton(autoCompaction);
            services.AddHostedService<Compaction.AutoCompactor>();
        }

        services.AddSingleton(sp => new SnapshotExporter(store, Path.Combine(memberDir, "snapshot-export"), sp.GetRequiredService<ILogger<SnapshotExporter>>()));

        // Raft (one path for every cluster size) starts before the watch and lease loops.
        services.AddReplication(options, identity, wal, memberDir);
        services.AddWatch(sp => new WatchOptions
        {
            // etcd's watch server splits at the same size its gRPC server accepts: the request limit plus gRPC overhead.
            MaxResponseBytes = options.GrpcMaxReceiveBytes,
            NoLeaderCancelAfter = TimeSpan.FromMilliseconds(3 * options.ElectionTimeoutMs),
            ProgressNotifyInterval = options.WatchProgressNotifyInterval > TimeSpan.Zero ? options.WatchProgressNotifyInterval : TimeSpan.FromMinutes(10),
        });
        services.AddLeases(sp =>
        {
            var lessor = LessorOptions.FromTiming(options.HeartbeatIntervalMs, options.ElectionTimeoutMs, identity.MemberId);
            lessor.CheckpointEnabled = options.LeaseCheckpointEnabled;
            lessor.CheckpointInterval = options.LeaseCheckpointInterval > TimeSpan.Zero ? options.LeaseCheckpointInterval : LessorOptions.DefaultCheckpointInterval;
            return lessor;
        });
        services.AddSingleton<LocalClient>();
        services.AddSingleton<Gateway.LoopbackChannel>();
        services.AddHostedService<QuotaMonitor>();
        services.AddHostedService<IdleMemoryTrim>();
        if (options.CorruptCheckTime > TimeSpan.Zero)
        {
            services.AddSingleton(new Corruption.CorruptCheckInterval(options.CorruptCheckTime));
            services.AddSingleton(sp => new Corruption.PeerHashClient(
                sp.GetRequiredService<RaftHost>().Membership,
                identity.MemberId,
                sp.GetRequiredService<Peer.PeerTransport>().Options with
                {
                    Tls = ReplicationServiceCollectionExtensions.ClientTls(options, sp.GetRequiredService<ILoggerFactory>().CreateLogger("kvstore.tls")),
                }));
            services.AddHostedService<Corruption.CorruptionMonitor>();
        }

        services.AddSingleton<ISystemdNotifier, SystemdNotifier>();
        services.AddHostedService<SystemdReadiness>();

        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = options.GrpcMaxReceiveBytes;
            o.MaxSendMessageSize = int.MaxValue;
            o.EnableDetailedErrors = false;
            o.Interceptors.Add<GrpcMetricsInterceptor>();
            o.Interceptors.Add<UnimplementedInterceptor>();
            o.Interceptors.Add<RequireLeaderInterceptor>();
        })
            // Each interceptor is a layer (an allocation and an await) on every call: the admin-only check only where its
            // methods are.
            .AddServiceOptions<MaintenanceService>(o => o.Interceptors.Add<AdminOnlyInterceptor>())
            .AddServiceOptions<ClusterService>(o => o.Interceptors.Add<AdminOnlyInterceptor>());

        var app = builder.Build();
        app.Use(OnThreadPool);
        app.Use(RoutePorts(listeners));
        bool IsPeerConnection(HttpContext context) => listeners.Kinds.TryGetValue(context.Connection.LocalPort, out var kind) && kind == PortKind.Peer;
        app.MapReplication(IsPeerConnection);
        app.MapLeaseForwarding(IsPeerConnection);
        app.MapGrpcService<KvService>();
        app.MapGrpcService<WatchService>();
        app.MapGrpcService<LeaseService>();
        app.MapGrpcService<MaintenanceService>();
        app.MapGrpcService<ClusterService>();
        app.MapGrpcService<AuthService>();
        app.MapGrpcService<ElectionService>();
        app.MapGrpcService<LockService>();
        HttpEndpoints.Map(app);
        if (options.EnableGrpcGateway)
        {
            Gateway.JsonGateway.Map(app);
        }

        RegisterGauges(app.Services);
        return app;
    }

    /// <summary>
    /// HTTP/1.x requests (probes, /metrics, the JSON gateway) leave the transport's I/O thread before any handler runs:
    /// with inline scheduling Kestrel would run them there, and a slow one (a large gateway range) would hold up the
    /// other connections served by that thread. HTTP/2 streams already start on the thread pool.
    /// </summary>
    internal static Task OnThreadPool(HttpContext context, RequestDelegate next) =>
        HttpProtocol.IsHttp2(context.Request.Protocol) ? next(context) : YieldThenAsync(context, next);

    private static async Task YieldThenAsync(HttpContext context, RequestDelegate next)
    {
        await Task.Yield();
        await next(context);
    }

    /// <summary>Peer ports answer only the peer services of package kvstore.raft (client services look unimplemented
    /// there, as etcd's 2380 answers only raft); metrics ports only /metrics and the probes (/health, /livez, /readyz).</summary>
    private static Func<HttpContext, RequestDelegate, Task> RoutePorts(Listeners listeners) => (context, next) =>
    {
        var kind = listeners.Kinds.GetValueOrDefault(context.Connection.LocalPort, PortKind.Client);
        if (kind == PortKind.Client)
        {
            return next(context);
        }

        var path = context.Request.Path.Value ?? string.Empty;
        if (kind == PortKind.Peer && path.StartsWith("/kvstore.raft.", StringComparison.Ordinal))
        {
            return next(context);
        }

        if (kind == PortKind.Metrics && path is "/metrics" or "/health" or "/livez" or "/readyz")
        {
            return next(context);
        }

        if (context.Request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) == true)
        {
            context.Response.ContentType = "application/grpc";
            context.Response.AppendTrailer("grpc-status", ((int)Grpc.Core.StatusCode.Unimplemented).ToString(CultureInfo.InvariantCulture));
            context.Response.AppendTrailer("grpc-message", "kvstore: the peer port serves only raft traffic");
            return Task.CompletedTask;
        }

        context.Response.StatusCode = StatusCodes.Status404NotFound;
        return Task.CompletedTask;
    };

    /// <summary>Values etcd keeps as gauges, read from their owners at scrape time.</summary>
    private static void RegisterGauges(IServiceProvider services)
    {
        var metrics = services.GetRequiredService<ServerMetrics>();
        var state = services.GetRequiredService<NodeState>();
        var identity = services.GetRequiredService<MemberIdentity>();
        var quota = services.GetRequiredService<Quota>();
        metrics.ServerId.WithLabels(EtcdLog.Id(identity.MemberId)).Set(1);
        metrics.ServerVersion.WithLabels(Versions.EtcdServer).Set(1);
        metrics.ClusterVersion.WithLabels(Versions.EtcdCluster).Set(1);
        GrpcMetricsInterceptor.Preregister(metrics);
        metrics.Registry.AddBeforeCollectCallback(() =>
        {
            // A snapshot install may replace the store instance: read the one the services use now.
            var current = services.GetRequiredService<RaftHost>().Store;
            metrics.HasLeader.Set(state.HasLeader ? 1 : 0);
            metrics.IsLeader.Set(state.LeaderId == identity.MemberId ? 1 : 0);
            metrics.ProposalsCommitted.Set(state.CommittedIndex);
            metrics.ProposalsApplied.Set(state.AppliedIndex);
            metrics.QuotaBackendBytes.Set(quota.QuotaBytes);
            metrics.DbTotalSize.Set(current.DbSizeBytes);
            metrics.DbInUseSize.Set(current.DbSizeInUseBytes);
            metrics.CurrentRevision.Set(current.CurrentRevision);
            metrics.CompactRevision.Set(current.CompactRevision);
        });
    }

    /// <summary>
    /// FASTER writes its log pages and the WAL through FileStream, whose asynchronous writes on Linux are synchronous
    /// writes on thread-pool threads, each holding its thread until the disk is done (O_SYNC). A checkpoint or a
    /// defragment hands over many page writes at once; with the default minimum (one thread per core) the WAL's writes,
    /// the apply loop and the gRPC handlers then queue behind them until the pool adds threads, one about every half
    /// second (docs/storage.md has the measurements).
    /// </summary>
    private static void ReserveThreadPoolThreads()
    {
        ThreadPool.GetMinThreads(out var workers, out var completionPorts);
        ThreadPool.SetMinThreads(Math.Max(workers, MinThreadPoolThreads), completionPorts);
    }

    private static FileStream LockDataDir(string memberDir)
    {
        var path = Path.Combine(memberDir, "kvstore.lock");
        try
        {
            // FileShare.None takes an exclusive advisory lock (flock) on Unix: a second member on the same data dir fails.
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            throw new IOException($"data directory is in use by another process (lock {path}): {e.Message}", e);
        }
    }


    /// <summary>etcd's first lines: the server's settings, then the member it runs as.</summary>
    private static void LogStarting(Microsoft.Extensions.Logging.ILogger logger, ServerOptions options, MemberIdentity identity, string memberDir)
    {
        static string[] Urls(IEnumerable<Uri> urls) => [.. urls.Select(u => u.GetLeftPart(UriPartial.Authority))];
        EtcdLog.Info(
            logger,
            "starting an etcd server",
            ("etcd-version", Versions.EtcdServer),
            ("kvstore-version", Versions.KvStore),
            ("name", identity.Name),
            ("data-dir", options.EffectiveDataDir),
            ("wal-dir", options.WalDir),
            ("member-dir", memberDir),
            ("force-new-cluster", options.ForceNewCluster),
            ("heartbeat-interval", EtcdLog.Duration(TimeSpan.FromMilliseconds(options.HeartbeatIntervalMs))),
            ("election-timeout", EtcdLog.Duration(TimeSpan.FromMilliseconds(options.ElectionTimeoutMs))),
            ("snapshot-count", options.SnapshotCount),
            ("initial-advertise-peer-urls", Urls(options.InitialAdvertisePeerUrls)),
            ("listen-peer-urls", Urls(options.ListenPeerUrls)),
            ("advertise-client-urls", Urls(options.AdvertiseClientUrls)),
            ("listen-client-urls", Urls(options.ListenClientUrls)),
            ("listen-metrics-urls", Urls(options.ListenMetricsUrls)),
            ("initial-cluster", options.InitialCluster),
            ("initial-cluster-state", options.InitialClusterState),
            ("initial-cluster-token", options.InitialClusterToken),
            ("quota-backend-bytes", options.QuotaBackendBytes),
            ("max-request-bytes", options.MaxRequestBytes),
            ("initial-corrupt-check", options.InitialCorruptCheck),
            ("auto-compaction-mode", options.AutoCompactionMode),
            ("auto-compaction-retention", options.AutoCompactionRetention));
        EtcdLog.Info(logger, "starting local member", ("local-member-id", EtcdLog.Id(identity.MemberId)), ("cluster-id", EtcdLog.Id(identity.ClusterId)));
    }

    /// <summary>etcd's lines for each listener once it accepts connections.</summary>
    private static void LogServing(Microsoft.Extensions.Logging.ILogger logger, ServerOptions options)
    {
        foreach (var url in options.ListenPeerUrls)
        {
            EtcdLog.Info(logger, "serving peer traffic", ("address", url.Authority));
        }

        foreach (var url in options.ListenClientUrls)
        {
            var secure = url.Scheme == Uri.UriSchemeHttps;
            EtcdLog.Info(
                logger,
                secure ? "serving client traffic securely" : "serving client traffic insecurely; this is strongly discouraged!",
                ("address", url.Authority));
        }

        foreach (var url in options.ListenMetricsUrls)
        {
            EtcdLog.Info(logger, "serving metrics", ("address", url.ToString()));
        }
    }

    /// <summary>Leadership for the watch/lease code, from the node state.</summary>
    private sealed class NodeLeaderStatus(NodeState state, MemberIdentity identity) : ILeaderStatus
    {
        public bool HasLeader => state.HasLeader;

        public bool IsLeader => state.LeaderId == identity.MemberId;
    }
}
