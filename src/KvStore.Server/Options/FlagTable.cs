namespace KvStore.Server.Options;

/// <summary>
/// Every flag etcd 3.4/3.5 knows, with etcd's default and whether we implement it.
/// Supported flags carry an Apply action; see docs/configuration.md for the user-facing table.
/// </summary>
internal static class FlagTable
{
    private static readonly FlagSpec[] Specs =
    [
        // Member.
        S("name", FlagKind.String, "default", (o, v) => o.Name = v),
        S("data-dir", FlagKind.String, "${name}.etcd", (o, v) => o.DataDir = v),
        S("wal-dir", FlagKind.String, string.Empty, (o, v) => o.WalDir = v),
        S("snapshot-count", FlagKind.Uint, "100000", (o, v) => o.SnapshotCount = Uint(v)),
        S("heartbeat-interval", FlagKind.Uint, "100", (o, v) => o.HeartbeatIntervalMs = (long)Uint(v)),
        S("election-timeout", FlagKind.Uint, "1000", (o, v) => o.ElectionTimeoutMs = (long)Uint(v)),
        S("listen-peer-urls", FlagKind.Urls, "http://localhost:2380", (o, v) => o.ListenPeerUrls = Urls(v)),
        S("listen-client-urls", FlagKind.Urls, "http://localhost:2379", (o, v) => o.ListenClientUrls = Urls(v)),
        S("quota-backend-bytes", FlagKind.Int, "0", (o, v) => o.QuotaBackendBytes = Int(v)),
        S("max-txn-ops", FlagKind.Uint, "128", (o, v) => o.MaxTxnOps = (long)Uint(v)),
        S("max-request-bytes", FlagKind.Uint, "1572864", (o, v) => o.MaxRequestBytes = (long)Uint(v)),
        S("max-concurrent-streams", FlagKind.Uint, "4294967295", (o, v) => o.MaxConcurrentStreams = Uint(v)),
        N("max-snapshots", FlagKind.Uint, "5"),
        N("max-wals", FlagKind.Uint, "5"),
        N("backend-batch-interval", FlagKind.Duration, "0"),
        N("backend-batch-limit", FlagKind.Uint, "0"),
        N("backend-bbolt-freelist-type", FlagKind.String, "map"),
        N("experimental-backend-bbolt-freelist-type", FlagKind.String, "array"),
        N("grpc-keepalive-min-time", FlagKind.Duration, "5s"),
        N("grpc-keepalive-interval", FlagKind.Duration, "2h"),
        N("grpc-keepalive-timeout", FlagKind.Duration, "20s"),
        S("initial-election-tick-advance", FlagKind.Bool, "true", (o, v) => o.InitialElectionTickAdvance = Bool(v)),
        U("socket-reuse-port", FlagKind.Bool, "false", "listeners never share a port with another process"),
        U("socket-reuse-address", FlagKind.Bool, "false", "listeners never share an address with another process"),
        U("unsafe-no-fsync", FlagKind.Bool, "false", "kvstore always syncs its WAL before acknowledging"),
        U("listen-client-http-urls", FlagKind.Urls, string.Empty, "HTTP is served on the client URLs next to gRPC"),

        // Clustering.
        S("initial-advertise-peer-urls", FlagKind.Urls, "http://localhost:2380", (o, v) => o.InitialAdvertisePeerUrls = Urls(v)),
        S("initial-cluster", FlagKind.String, "default=http://localhost:2380", (o, v) => o.InitialCluster = v),
        S("initial-cluster-state", FlagKind.String, "new", (o, v) => o.InitialClusterState = v),
        S("initial-cluster-token", FlagKind.String, "etcd-cluster", (o, v) => o.InitialClusterToken = v),
        S("advertise-client-urls", FlagKind.Urls, "http://localhost:2379", (o, v) => o.AdvertiseClientUrls = Urls(v)),
        U("discovery", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-fallback", FlagKind.String, "proxy", "discovery is not implemented; use --initial-cluster"),
        U("discovery-proxy", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-srv", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-srv-name", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        N("strict-reconfig-check", FlagKind.Bool, "true"),
        N("pre-vote", FlagKind.Bool, "false"),
        S("auto-compaction-retention", FlagKind.String, "0", (o, v) => o.AutoCompactionRetention = v),
        S("auto-compaction-mode", FlagKind.String, "periodic", (o, v) => o.AutoCompactionMode = v),
        U("enable-v2", FlagKind.Bool, "false", "the v2 API is not implemented"),
        U("v2-deprecation", FlagKind.String, "not-yet", "the v2 store does not exist in kvstore"),
        U("max-learners", FlagKind.Int, "1", "one learner at a time, as etcd's default"),
        U("experimental-max-learners", FlagKind.Int, "1", "one learner at a time, as etcd's default"),

        // Security.
        S("cert-file", FlagKind.String, string.Empty, (o, v) => o.ClientTls.CertFile = v),
        S("key-file", FlagKind.String, string.Empty, (o, v) => o.ClientTls.KeyFile = v),
        S("client-cert-auth", FlagKind.Bool, "false", (o, v) => o.ClientTls.ClientCertAuth = Bool(v)),
        S("trusted-ca-file", FlagKind.String, string.Empty, (o, v) => o.ClientTls.TrustedCaFile = v),
        S("auto-tls", FlagKind.Bool, "false", (o, v) => o.ClientTls.AutoTls = Bool(v)),
        S("client-crl-file", FlagKind.String, string.Empty, (o, v) => o.ClientTls.CrlFile = v),
        S("client-cert-allowed-hostname", FlagKind.String, string.Empty, (o, v) => o.ClientTls.AllowedHostname = v),
        S("client-cert-file", FlagKind.String, string.Empty, (o, v) => o.ClientTls.ClientCertFile = v),
        S("client-key-file", FlagKind.String, string.Empty, (o, v) => o.ClientTls.ClientKeyFile = v),
        S("peer-cert-file", FlagKind.String, string.Empty, (o, v) => o.PeerTls.CertFile = v),
        S("peer-key-file", FlagKind.String, string.Empty, (o, v) => o.PeerTls.KeyFile = v),
        S("peer-client-cert-auth", FlagKind.Bool, "false", (o, v) => o.PeerTls.ClientCertAuth = Bool(v)),
        S("peer-trusted-ca-file", FlagKind.String, string.Empty, (o, v) => o.PeerTls.TrustedCaFile = v),
        S("peer-auto-tls", FlagKind.Bool, "false", (o, v) => o.PeerTls.AutoTls = Bool(v)),
        S("peer-cert-allowed-cn", FlagKind.String, string.Empty, (o, v) => o.PeerTls.AllowedCn = v),
        S("peer-cert-allowed-hostname", FlagKind.String, string.Empty, (o, v) => o.PeerTls.AllowedHostname = v),
        S("peer-crl-file", FlagKind.String, string.Empty, (o, v) => o.PeerTls.CrlFile = v),
        S("peer-client-cert-file", FlagKind.String, string.Empty, (o, v) => o.PeerTls.ClientCertFile = v),
        S("peer-client-key-file", FlagKind.String, string.Empty, (o, v) => o.PeerTls.ClientKeyFile = v),
        S("self-signed-cert-validity", FlagKind.Uint, "1", (o, v) => o.SelfSignedCertValidityYears = Uint(v)),
        S("cipher-suites", FlagKind.String, string.Empty, (o, v) => o.CipherSuites = v),
        S("tls-min-version", FlagKind.String, "TLS1.2", (o, v) => o.TlsMinVersion = v),
        S("tls-max-version", FlagKind.String, string.Empty, (o, v) => o.TlsMaxVersion = v),
        U("cors", FlagKind.String, "*", "the v2 HTTP API that CORS applies to is not implemented"),
        U("host-whitelist", FlagKind.String, "*", "the v2 HTTP API that the host whitelist applies to is not implemented"),

        // Auth.
        S("auth-token", FlagKind.String, "simple", (o, v) => o.AuthToken = v),
        S("bcrypt-cost", FlagKind.Uint, "10", (o, v) => o.BcryptCost = (int)Math.Min(int.MaxValue, Uint(v))),
        S("auth-token-ttl", FlagKind.Uint, "300", (o, v) => o.AuthTokenTtlSeconds = Uint(v)),

        // Profiling and monitoring.
        U("enable-pprof", FlagKind.Bool, "false", "Go's pprof does not exist in .NET (use dotnet-trace / dotnet-counters)"),
        S("metrics", FlagKind.String, "basic", (o, v) => o.Metrics = v),
        S("listen-metrics-urls", FlagKind.Urls, string.Empty, (o, v) => o.ListenMetricsUrls = Urls(v)),

        // Logging.
        S("logger", FlagKind.String, "zap", (o, v) => o.Logger = v),
        S("log-outputs", FlagKind.String, "default", (o, v) => o.LogOutputs = v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)),
        S("log-level", FlagKind.String, "info", (o, v) => o.LogLevel = v),
        S("log-format", FlagKind.String, "text", (o, v) => o.LogFormat = v),
        S("debug", FlagKind.Bool, "false", (o, v) =>
        {
            if (Bool(v))
            {
                o.LogLevel = "debug";
            }
        }),
        U("log-package-levels", FlagKind.String, string.Empty, "capnslog package levels do not exist; use --log-level"),
        U("enable-log-rotation", FlagKind.Bool, "false", "log rotation is not implemented; use logrotate or journald"),
        U("log-rotation-config-json", FlagKind.String, string.Empty, "log rotation is not implemented; use logrotate or journald"),

        // v2 proxy.
        U("proxy", FlagKind.String, "off", "the v2 proxy is not implemented"),
        U("proxy-failure-wait", FlagKind.Uint, "5000", "the v2 proxy is not implemented"),
        U("proxy-refresh-interval", FlagKind.Uint, "30000", "the v2 proxy is not implemented"),
        U("proxy-dial-timeout", FlagKind.Uint, "1000", "the v2 proxy is not implemented"),
        U("proxy-write-timeout", FlagKind.Uint, "5000", "the v2 proxy is not implemented"),
        U("proxy-read-timeout", FlagKind.Uint, "0", "the v2 proxy is not implemented"),

        // Experimental.
        S("experimental-initial-corrupt-check", FlagKind.Bool, "false", (o, v) => o.InitialCorruptCheck = Bool(v)),
        S("experimental-corrupt-check-time", FlagKind.Duration, "0s", (o, v) => o.CorruptCheckTime = Duration(v)),
        U("experimental-enable-v2v3", FlagKind.String, string.Empty, "the v2 API is not implemented"),
        S("experimental-enable-lease-checkpoint", FlagKind.Bool, "false", (o, v) => o.LeaseCheckpointEnabled = Bool(v)),
        S("experimental-lease-checkpoint-interval", FlagKind.Duration, "5m0s", (o, v) => o.LeaseCheckpointInterval = Duration(v)),
        N("experimental-enable-lease-checkpoint-persist", FlagKind.Bool, "false"), // remaining TTLs are always persisted
        N("experimental-compaction-batch-limit", FlagKind.Int, "1000"),
        N("experimental-compaction-sleep-interval", FlagKind.Duration, "10ms"),
        U("experimental-peer-skip-client-san-verification", FlagKind.Bool, "false", "peer certificates are always verified"),
        S("experimental-watch-progress-notify-interval", FlagKind.Duration, "10m", (o, v) => o.WatchProgressNotifyInterval = Duration(v)),
        S("watch-progress-notify-interval", FlagKind.Duration, "10m", (o, v) => o.WatchProgressNotifyInterval = Duration(v)),
        N("experimental-warning-apply-duration", FlagKind.Duration, "100ms"),
        N("experimental-warning-unary-request-duration", FlagKind.Duration, "300ms"),
        N("experimental-txn-mode-write-with-shared-buffer", FlagKind.Bool, "true"),
        N("experimental-bootstrap-defrag-threshold-megabytes", FlagKind.Uint, "0"),
        U("experimental-snapshot-catchup-entries", FlagKind.Uint, "5000", "the catch-up window behind a raft snapshot is fixed"),
        U("experimental-memory-mlock", FlagKind.Bool, "false", "kvstore does not lock its memory"),
        U("experimental-downgrade-check-time", FlagKind.Duration, "5s", "cluster downgrades are not implemented"),
        U("experimental-stop-grpc-service-on-defrag", FlagKind.Bool, "false", "defragmentation does not stop the gRPC health service"),
        U("experimental-compact-hash-check-enabled", FlagKind.Bool, "false", "the compact hash check is not implemented"),
        U("experimental-compact-hash-check-time", FlagKind.Duration, "1m", "the compact hash check is not implemented"),
        U("experimental-wait-cluster-ready-timeout", FlagKind.Duration, "5s", "a member serves once it has a leader; there is no separate wait"),
        U("experimental-enable-distributed-tracing", FlagKind.Bool, "false", "distributed tracing is not implemented"),
        U("experimental-distributed-tracing-address", FlagKind.String, "localhost:4317", "distributed tracing is not implemented"),
        U("experimental-distributed-tracing-service-name", FlagKind.String, "etcd", "distributed tracing is not implemented"),
        U("experimental-distributed-tracing-instance-id", FlagKind.String, string.Empty, "distributed tracing is not implemented"),
        U("experimental-distributed-tracing-sampling-rate", FlagKind.Int, "0", "distributed tracing is not implemented"),

        // Unsafe.
        S("force-new-cluster", FlagKind.Bool, "false", (o, v) => o.ForceNewCluster = Bool(v)),

        // etcd 3.5/3.6 additions: the 3.6 names of experimental flags keep their twin's status.
        S("feature-gates", FlagKind.String, string.Empty, FeatureGates.Apply),
        S("corrupt-check-time", FlagKind.Duration, "0s", (o, v) => o.CorruptCheckTime = Duration(v)),
        U("compact-hash-check-time", FlagKind.Duration, "1m", "the compact hash check is not implemented"),
        N("compaction-batch-limit", FlagKind.Int, "1000"),
        N("compaction-sleep-interval", FlagKind.Duration, "10ms"),
        N("bootstrap-defrag-threshold-megabytes", FlagKind.Uint, "0"),
        N("warning-apply-duration", FlagKind.Duration, "100ms"),
        N("warning-unary-request-duration", FlagKind.Duration, "300ms"),
        U("snapshot-catchup-entries", FlagKind.Uint, "5000", "the catch-up window behind a raft snapshot is fixed"),
        U("memory-mlock", FlagKind.Bool, "false", "kvstore does not lock its memory"),
        U("downgrade-check-time", FlagKind.Duration, "5s", "cluster downgrades are not implemented"),
        U("peer-skip-client-san-verification", FlagKind.Bool, "false", "peer certificates are always verified"),
        U("raft-read-timeout", FlagKind.Duration, "5s", "peer streams use HTTP/2 keep-alive pings instead"),
        U("raft-write-timeout", FlagKind.Duration, "5s", "peer streams use HTTP/2 keep-alive pings instead"),
        S("enable-grpc-gateway", FlagKind.Bool, "true", (o, v) => o.EnableGrpcGateway = Bool(v)),
        U("enable-distributed-tracing", FlagKind.Bool, "false", "distributed tracing is not implemented"),
        U("distributed-tracing-address", FlagKind.String, "localhost:4317", "distributed tracing is not implemented"),
        U("distributed-tracing-service-name", FlagKind.String, "etcd", "distributed tracing is not implemented"),
        U("distributed-tracing-instance-id", FlagKind.String, string.Empty, "distributed tracing is not implemented"),
        U("distributed-tracing-sampling-rate", FlagKind.Int, "0", "distributed tracing is not implemented"),
        U("discovery-endpoints", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-token", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-dial-timeout", FlagKind.Duration, "2s", "discovery is not implemented; use --initial-cluster"),
        U("discovery-request-timeout", FlagKind.Duration, "5s", "discovery is not implemented; use --initial-cluster"),
        U("discovery-keepalive-time", FlagKind.Duration, "2s", "discovery is not implemented; use --initial-cluster"),
        U("discovery-keepalive-timeout", FlagKind.Duration, "6s", "discovery is not implemented; use --initial-cluster"),
        U("discovery-insecure-transport", FlagKind.Bool, "true", "discovery is not implemented; use --initial-cluster"),
        U("discovery-insecure-skip-tls-verify", FlagKind.Bool, "false", "discovery is not implemented; use --initial-cluster"),
        U("discovery-cert", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-key", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-cacert", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-user", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
        U("discovery-password", FlagKind.String, string.Empty, "discovery is not implemented; use --initial-cluster"),
    ];

    private static readonly Dictionary<string, FlagSpec> ByName = Specs.ToDictionary(s => s.Name, StringComparer.Ordinal);

    /// <summary>All flags except the special ones (config-file, version, help).</summary>
    public static IReadOnlyList<FlagSpec> All => Specs;

    public static FlagSpec? Find(string name) => ByName.GetValueOrDefault(name);

    private static FlagSpec S(string name, FlagKind kind, string defaultValue, Action<ServerOptions, string> apply) =>
        new(name, kind, defaultValue, FlagSupport.Supported, apply);

    private static FlagSpec N(string name, FlagKind kind, string defaultValue) => new(name, kind, defaultValue, FlagSupport.NoEffect);

    private static FlagSpec U(string name, FlagKind kind, string defaultValue, string? reason = null) =>
        new(name, kind, defaultValue, FlagSupport.Unsupported, Reason: reason);

    private static bool Bool(string v) => GoValues.TryParseBool(v, out var b) && b;

    private static long Int(string v) => GoValues.TryParseInt(v, out var n) ? n : 0;

    private static TimeSpan Duration(string v) => GoValues.TryParseDuration(v, out var d) ? d : TimeSpan.Zero;

    private static ulong Uint(string v) => GoValues.TryParseUint(v, out var n) ? n : 0;

    private static IReadOnlyList<Uri> Urls(string v) => GoValues.TryParseUrls(v, out var urls, out _) ? urls : [];
}
