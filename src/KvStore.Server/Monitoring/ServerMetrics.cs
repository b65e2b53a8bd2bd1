using Prometheus;

namespace KvStore.Server.Monitoring;

/// <summary>
/// The member's Prometheus metrics under etcd's names, types, labels and buckets, so the etcd mixin's alerts and
/// etcd's dashboards work unchanged. One registry per member (several members may share a test process); the
/// exposition, process_* collectors and label handling come from prometheus-net.
/// </summary>
public sealed class ServerMetrics
{
    // etcd's disk histograms: 1 ms doubling to about 8 s.
    private static readonly double[] DiskBuckets = Histogram.ExponentialBuckets(0.001, 2, 14);

    // etcd's peer round-trip histogram: 100 µs doubling to about 0.8 s.
    private static readonly double[] RoundTripBuckets = Histogram.ExponentialBuckets(0.0001, 2, 14);

    public ServerMetrics(MetricsLevel level = MetricsLevel.Basic)
    {
        Level = level;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        DotNetStats.Register(Registry);
        var factory = Prometheus.Metrics.WithCustomRegistry(Registry);

        // etcd exports no exemplars; looking one up from the current trace context on every increment costs a
        // measurable share of each gRPC message sent (watch fan-out sends thousands per write).
        factory.ExemplarBehavior = ExemplarBehavior.NoExemplars();
        AddGoProcessGauges(factory);

        HasLeader = factory.CreateGauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.");
        IsLeader = factory.CreateGauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.");
        LeaderChanges = factory.CreateCounter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.");
        ProposalsCommitted = factory.CreateGauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.");
        ProposalsApplied = factory.CreateGauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.");
        ProposalsPending = factory.CreateGauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.");
        ProposalsFailed = factory.CreateCounter("etcd_server_proposals_failed_total", "The total number of failed proposals seen.");
        SlowApply = factory.CreateCounter("etcd_server_slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk).");
        QuotaBackendBytes = factory.CreateGauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.");
        ServerId = factory.CreateGauge("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", "server_id");
        ServerVersion = factory.CreateGauge("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.", "server_version");
        ClusterVersion = factory.CreateGauge("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version", "cluster_version");

        DbTotalSize = factory.CreateGauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.");
        DbInUseSize = factory.CreateGauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.");
        CurrentRevision = factory.CreateGauge("etcd_debugging_mvcc_current_revision", "The current revision of store.");
        CompactRevision = factory.CreateGauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.");

        WalFsync = factory.CreateHistogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", new HistogramConfiguration { Buckets = DiskBuckets });
        BackendCommit = factory.CreateHistogram("etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend.", new HistogramConfiguration { Buckets = DiskBuckets });
        SnapshotSave = factory.CreateHistogram("etcd_debugging_snap_save_total_duration_seconds", "The total latency distributions of save called by snapshot.", new HistogramConfiguration { Buckets = DiskBuckets });

        PeerSentFailures = factory.CreateCounter("etcd_network_peer_sent_failures_total", "The total number of send failures from peers.", "To");
        PeerRoundTrip = factory.CreateHistogram("etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers", ["To"], new HistogramConfiguration { Buckets = RoundTripBuckets });
        PeerSentBytes = factory.CreateCounter("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", "To");
        PeerReceivedBytes = factory.CreateCounter("etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.", "From");
        ClientSentBytes = factory.CreateCounter("etcd_network_client_grpc_sent_bytes_total", "The total number of bytes sent to grpc clients.");
        ClientReceivedBytes = factory.CreateCounter("etcd_network_client_grpc_received_bytes_total", "The total number of bytes received from grpc clients.");

        string[] methodLabels = ["grpc_type", "grpc_service", "grpc_method"];
        GrpcStarted = factory.CreateCounter("grpc_server_started_total", "Total number of RPCs started on the server.", methodLabels);
        GrpcHandled = factory.CreateCounter("grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.", [.. methodLabels, "grpc_code"]);
        GrpcReceived = factory.CreateCounter("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", methodLabels);
        GrpcSent = factory.CreateCounter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", methodLabels);
        if (level == MetricsLevel.Extensive)
        {
            // etcd turns the per-method latency histograms on only with --metrics extensive (Prometheus' default buckets).
            GrpcHandling = factory.CreateHistogram("grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.", methodLabels);
        }
    }

    /// <summary>The registry /metrics exposes.</summary>
    public CollectorRegistry Registry { get; }

    /// <summary>--metrics: basic, or extensive (adds gRPC handling-time histograms).</summary>
    public MetricsLevel Level { get; }

    public Gauge HasLeader { get; }

    public Gauge IsLeader { get; }

    public Counter LeaderChanges { get; }

    /// <summary>etcd keeps the committed index here (a gauge despite its name).</summary>
    public Gauge ProposalsCommitted { get; }

    /// <summary>etcd keeps the applied index here (a gauge despite its name).</summary>
    public Gauge ProposalsApplied { get; }

    /// <summary>Proposals of this member waiting to be applied.</summary>
    public Gauge ProposalsPending { get; }

    /// <summary>Proposals that could not be proposed or were not applied before the caller's deadline.</summary>
    public Counter ProposalsFailed { get; }

    public Counter SlowApply { get; }

    public Gauge QuotaBackendBytes { get; }

    public Gauge ServerId { get; }

    public Gauge ServerVersion { get; }

    public Gauge ClusterVersion { get; }

    public Gauge DbTotalSize { get; }

    public Gauge DbInUseSize { get; }

    public Gauge CurrentRevision { get; }

    public Gauge CompactRevision { get; }

    /// <summary>One observation per WAL sync.</summary>
    public Histogram WalFsync { get; }

    /// <summary>One observation per committed batch written into the store.</summary>
    public Histogram BackendCommit { get; }

    /// <summary>One observation per store checkpoint (the raft snapshot).</summary>
    public Histogram SnapshotSave { get; }

    public Counter PeerSentFailures { get; }

    public Histogram PeerRoundTrip { get; }

    public Counter PeerSentBytes { get; }

    public Counter PeerReceivedBytes { get; }

    public Counter ClientSentBytes { get; }

    public Counter ClientReceivedBytes { get; }

    public Counter GrpcStarted { get; }

    public Counter GrpcHandled { get; }

    public Counter GrpcReceived { get; }

    public Counter GrpcSent { get; }

    /// <summary>Only with --metrics extensive.</summary>
    public Histogram? GrpcHandling { get; }

    /// <summary>Peer IDs as etcd labels them (lower-case hex).</summary>
    public static string PeerLabel(ulong id) => id.ToString("x", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The two process gauges etcd's dashboards read that prometheus-net's process collector names differently
    /// (Go's collector: resident memory, open file descriptors).
    /// </summary>
    private void AddGoProcessGauges(MetricFactory factory)
    {
        var resident = factory.CreateGauge("process_resident_memory_bytes", "Resident memory size in bytes.");
        var openFds = factory.CreateGauge("process_open_fds", "Number of open file descriptors.");
        Registry.AddBeforeCollectCallback(() =>
        {
            resident.Set(Environment.WorkingSet);
            if (Directory.Exists("/proc/self/fd"))
            {
                openFds.Set(Directory.EnumerateFileSystemEntries("/proc/self/fd").Count());
            }
        });
    }

    /// <summary>Writes the text exposition format.</summary>
    public Task ExportAsync(Stream output, CancellationToken cancellationToken) => Registry.CollectAndExportAsTextAsync(output, cancellationToken);
}

/// <summary>etcd's --metrics levels.</summary>
public enum MetricsLevel
{
    Basic,
    Extensive,
}
