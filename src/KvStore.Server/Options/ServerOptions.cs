namespace KvStore.Server.Options;

/// <summary>
/// The member's configuration after flags, ETCD_* environment variables or a config file were applied.
/// Names and defaults follow etcd's (see docs/configuration.md).
/// </summary>
public sealed class ServerOptions
{
    /// <summary>etcd's --name default.</summary>
    public const string DefaultName = "default";

    /// <summary>etcd's default --initial-cluster (for a member named <see cref="DefaultName"/>).</summary>
    public const string DefaultInitialCluster = "default=http://localhost:2380";

    /// <summary>Default backend quota (etcd: 0 means 2 GiB).</summary>
    public const long DefaultQuotaBytes = 2L * 1024 * 1024 * 1024;

    /// <summary>Extra room gRPC accepts above --max-request-bytes so that we can answer "request is too large" ourselves.</summary>
    public const int GrpcOverheadBytes = 512 * 1024;

    public string Name { get; set; } = DefaultName;

    /// <summary>The data directory; "${name}.etcd" when not given.</summary>
    public string DataDir { get; set; } = string.Empty;

    /// <summary>A dedicated WAL directory (--wal-dir); empty = &lt;data-dir&gt;/member/wal.</summary>
    public string WalDir { get; set; } = string.Empty;

    public IReadOnlyList<Uri> ListenClientUrls { get; set; } = [new("http://localhost:2379")];

    public IReadOnlyList<Uri> AdvertiseClientUrls { get; set; } = [new("http://localhost:2379")];

    public IReadOnlyList<Uri> ListenPeerUrls { get; set; } = [new("http://localhost:2380")];

    public IReadOnlyList<Uri> InitialAdvertisePeerUrls { get; set; } = [new("http://localhost:2380")];

    public IReadOnlyList<Uri> ListenMetricsUrls { get; set; } = [];

    /// <summary>--enable-grpc-gateway: the JSON API under /v3/ on the client port.</summary>
    public bool EnableGrpcGateway { get; set; } = true;

    /// <summary>--metrics: "basic", or "extensive" (adds gRPC handling-time histograms).</summary>
    public string Metrics { get; set; } = "basic";

    public string InitialCluster { get; set; } = DefaultInitialCluster;

    public string InitialClusterState { get; set; } = "new";

    public string InitialClusterToken { get; set; } = "etcd-cluster";

    public long HeartbeatIntervalMs { get; set; } = 100;

    public long ElectionTimeoutMs { get; set; } = 1000;

    /// <summary>--initial-election-tick-advance: fast-forward the election timer once peers are connected at start.</summary>
    public bool InitialElectionTickAdvance { get; set; } = true;

    public ulong SnapshotCount { get; set; } = 100_000;

    /// <summary>--experimental-enable-lease-checkpoint.</summary>
    public bool LeaseCheckpointEnabled { get; set; }

    /// <summary>--experimental-lease-checkpoint-interval (0 = etcd's default, 5 minutes).</summary>
    public TimeSpan LeaseCheckpointInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>--watch-progress-notify-interval / --experimental-watch-progress-notify-interval (0 = the default, 10 minutes).</summary>
    public TimeSpan WatchProgressNotifyInterval { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>--quota-backend-bytes as given (0 = default 2 GiB, see <see cref="EffectiveQuotaBytes"/>).</summary>
    public long QuotaBackendBytes { get; set; }

    public long EffectiveQuotaBytes => QuotaBackendBytes <= 0 ? DefaultQuotaBytes : QuotaBackendBytes;

    public long MaxRequestBytes { get; set; } = 1_572_864;

    public long MaxTxnOps { get; set; } = 128;

    /// <summary>--max-concurrent-streams: HTTP/2 streams per client connection (etcd default: unlimited).</summary>
    public ulong MaxConcurrentStreams { get; set; } = uint.MaxValue;

    /// <summary>--force-new-cluster: restart as the only member of the cluster, keeping the data (disaster recovery).</summary>
    public bool ForceNewCluster { get; set; }

    public string AutoCompactionMode { get; set; } = "periodic";

    public string AutoCompactionRetention { get; set; } = "0";

    /// <summary>--experimental-corrupt-check-time: how often the leader compares the followers' HashKV (zero = never).</summary>
    public TimeSpan CorruptCheckTime { get; set; }

    /// <summary>--experimental-initial-corrupt-check: compare HashKV with the peers before serving, refuse to start on a mismatch.</summary>
    public bool InitialCorruptCheck { get; set; }

    public string Logger { get; set; } = "zap";

    public string LogLevel { get; set; } = "info";

    public IReadOnlyList<string> LogOutputs { get; set; } = ["default"];

    /// <summary>Ours: text (readable console) or json.</summary>
    public string LogFormat { get; set; } = "text";

    /// <summary>--auth-token: "simple" or "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...".</summary>
    public string AuthToken { get; set; } = "simple";

    /// <summary>--bcrypt-cost: work factor of password hashes (etcd's default 10).</summary>
    public int BcryptCost { get; set; } = 10;

    /// <summary>bcrypt's cost bounds (Go's bcrypt.MinCost/MaxCost, as etcd validates --bcrypt-cost).</summary>
    public const int MinBcryptCost = 4;

    /// <inheritdoc cref="MinBcryptCost"/>
    public const int MaxBcryptCost = 31;

    /// <summary>--auth-token-ttl: seconds a simple token lives after its last use.</summary>
    public ulong AuthTokenTtlSeconds { get; set; } = 300;

    /// <summary>--tls-min-version (etcd: TLS1.2 when empty) and --tls-max-version (empty = highest).</summary>
    public string TlsMinVersion { get; set; } = "TLS1.2";

    public string TlsMaxVersion { get; set; } = string.Empty;

    /// <summary>--cipher-suites: comma-separated TLS 1.2 cipher suite names; empty = secure defaults.</summary>
    public string CipherSuites { get; set; } = string.Empty;

    public TlsOptions ClientTls { get; set; } = new();

    public TlsOptions PeerTls { get; set; } = new();

    /// <summary>--self-signed-cert-validity: years the --auto-tls / --peer-auto-tls certificates are valid.</summary>
    public ulong SelfSignedCertValidityYears { get; set; } = 1;

    /// <summary>Non-fatal remarks collected while parsing (unknown ETCD_* variables, no-effect flags); logged at start.</summary>
    public IList<string> Warnings { get; } = [];

    /// <summary>The data directory with etcd's default applied.</summary>
    public string EffectiveDataDir => string.IsNullOrEmpty(DataDir) ? Name + ".etcd" : DataDir;

    /// <summary>Maximum gRPC message size we accept before our own size check.</summary>
    public int GrpcMaxReceiveBytes => (int)Math.Min(int.MaxValue, MaxRequestBytes + GrpcOverheadBytes);
}

/// <summary>TLS settings of one port (client or peer).</summary>
public sealed class TlsOptions
{
    public string CertFile { get; set; } = string.Empty;

    public string KeyFile { get; set; } = string.Empty;

    public string TrustedCaFile { get; set; } = string.Empty;

    public bool ClientCertAuth { get; set; }

    public bool AutoTls { get; set; }

    /// <summary>--client-crl-file / --peer-crl-file: certificates listed there are refused.</summary>
    public string CrlFile { get; set; } = string.Empty;

    /// <summary>--peer-cert-allowed-cn: a peer client certificate must carry this CommonName.</summary>
    public string AllowedCn { get; set; } = string.Empty;

    /// <summary>--peer-cert-allowed-hostname: a peer client certificate must be valid for this host name.</summary>
    public string AllowedHostname { get; set; } = string.Empty;

    /// <summary>True when a certificate and key are configured (the listener must be https).</summary>
    public bool Enabled => CertFile.Length > 0 && KeyFile.Length > 0;

    /// <summary>
    /// --client-cert-file/--client-key-file (client side) or --peer-client-cert-file/--peer-client-key-file (peer side):
    /// the certificate this member presents on its own outgoing connections instead of <see cref="CertFile"/>.
    /// </summary>
    public string ClientCertFile { get; set; } = string.Empty;

    /// <summary>The key of <see cref="ClientCertFile"/>.</summary>
    public string ClientKeyFile { get; set; } = string.Empty;

    /// <summary>The files of this member's outgoing connections: the client certificate when given, else the listener's, and the same CA bundle.</summary>
    public TlsOptions Outgoing() => new()
    {
        CertFile = ClientCertFile.Length > 0 ? ClientCertFile : CertFile,
        KeyFile = ClientCertFile.Length > 0 ? ClientKeyFile : KeyFile,
        TrustedCaFile = TrustedCaFile,
    };
}
