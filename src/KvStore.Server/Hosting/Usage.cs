namespace KvStore.Server.Hosting;

/// <summary>The --help text.</summary>
internal static class Usage
{
    public const string Text = """
        Usage:

          kvstore [flags]
            Start a KvStore member (an etcd-compatible server).

          kvstore --version
            Show the version of kvstore.

          kvstore -h | --help
            Show this help.

          kvstore --config-file <path>
            Read the configuration from an etcd YAML configuration file; other flags and
            environment variables are then ignored.

        Flags take etcd's names and defaults; each can also be given as an ETCD_<FLAG>
        environment variable (e.g. ETCD_DATA_DIR). Giving both is an error, as in etcd.

        Member:
          --name 'default'                      Human-readable name for this member.
          --data-dir '${name}.etcd'             Path to the data directory.
          --wal-dir ''                          Path to a dedicated WAL directory.
          --snapshot-count '100000'             Applied entries between store checkpoints (the WAL is released up to each).
          --heartbeat-interval '100'            Heartbeat interval in milliseconds.
          --election-timeout '1000'             Election timeout in milliseconds.
          --listen-peer-urls 'http://localhost:2380'
          --listen-client-urls 'http://localhost:2379'
          --listen-metrics-urls ''              Extra URLs serving /metrics, /health, /livez and /readyz only.
          --metrics 'basic'                     basic, or extensive (adds gRPC handling-time histograms).
          --quota-backend-bytes '0'             Raise the NOSPACE alarm above this size (0 = 2 GiB).
          --max-txn-ops '128'                   Maximum operations in one transaction.
          --max-request-bytes '1572864'         Maximum client request size in bytes.
          --max-concurrent-streams              HTTP/2 streams per client connection (default unlimited).

        Clustering:
          --initial-advertise-peer-urls 'http://localhost:2380'
          --initial-cluster 'default=http://localhost:2380'
          --initial-cluster-state 'new'
          --initial-cluster-token 'etcd-cluster'
          --advertise-client-urls 'http://localhost:2379'

        Security:
          --cert-file, --key-file, --client-cert-auth, --trusted-ca-file         client port TLS
          --peer-cert-file, --peer-key-file, --peer-client-cert-auth, --peer-trusted-ca-file   peer port TLS

        Logging:
          --logger 'zap'                        zap or capnslog; an explicit zap writes etcd's JSON lines.
          --log-level 'info'                    debug, info, warn, error, panic, fatal.
          --log-outputs 'default'               default (= stderr), stderr, stdout, or file paths, comma separated.
          --log-format 'text'                   text (readable lines) or json (etcd's zap fields). kvstore only.

        Every other etcd flag is recognised: flags without an equivalent in kvstore are accepted
        with a warning or rejected at start naming the flag (see docs/configuration.md).

        """;
}
