using System.Security.Cryptography.X509Certificates;

using KvStore.Server.Monitoring;

namespace KvStore.Server.Peer;

/// <summary>Settings of a <see cref="PeerTransport"/>. Only <see cref="ClusterId"/>, <see cref="LocalMemberId"/> and
/// <see cref="SnapshotDirectory"/> have no sensible default.</summary>
public sealed record PeerTransportOptions
{
    /// <summary>Where peer traffic, send failures and round trips are counted (none in tests that do not care).</summary>
    public ServerMetrics? Metrics { get; init; }

    /// <summary>This member's cluster; peers of another cluster are refused in both directions.</summary>
    public required ulong ClusterId { get; init; }

    /// <summary>This member's ID (the <c>From</c> of every message it sends).</summary>
    public required ulong LocalMemberId { get; init; }

    /// <summary>Where received snapshots are written (created if missing). The node owns each file once it is handed over.</summary>
    public required string SnapshotDirectory { get; init; }

    /// <summary>Largest encoded message (and batch of messages) sent or accepted on a stream; a bigger single message is
    /// dropped with an error. The peer gRPC service's receive limit is derived from it.</summary>
    public int MaxMessageBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>Size of a snapshot chunk.</summary>
    public int SnapshotChunkBytes { get; init; } = 1024 * 1024;

    /// <summary>Messages queued per peer before new ones are dropped (and the peer reported unreachable).</summary>
    public int QueueCapacity { get; init; } = 4096;

    /// <summary>First reconnection delay; doubles on each failure up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan MinBackoff { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Largest reconnection delay. Short, as etcd's stream reader (it retries every 100 ms): members of a new cluster
    /// start seconds apart, and a longer delay left a member waiting up to that long after its peer was listening,
    /// which delayed the first election. A failed connect to a loopback or LAN peer costs next to nothing.
    /// </summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Time allowed to open a TCP (and TLS) connection and to get the peer's acknowledgement of a new stream.</summary>
    public TimeSpan DialTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How often a sender times a <c>Probe</c> call to its peer into the round-trip histogram (etcd's prober: 4 s).</summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>Idle time after which an HTTP/2 PING checks a connection.</summary>
    public TimeSpan KeepAlivePingDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>A connection whose PING is not answered in this time is closed (and the stream reconnects).</summary>
    public TimeSpan KeepAlivePingTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Client side of peer TLS (used for https:// peer URLs); null = system defaults, no client certificate.</summary>
    public PeerTlsOptions? Tls { get; init; }

    /// <summary>gRPC receive limit for the peer service: a full message batch or a snapshot chunk, plus framing.</summary>
    public int MaxReceiveBytes => Math.Max(MaxMessageBytes, SnapshotChunkBytes) + (64 * 1024);

    internal void Validate()
    {
        if (MaxMessageBytes < 1024 || SnapshotChunkBytes < 1024 || QueueCapacity < 1)
        {
            throw new ArgumentException("peer transport limits are too small (message >= 1 KiB, chunk >= 1 KiB, queue >= 1)");
        }

        if (MinBackoff <= TimeSpan.Zero || MaxBackoff < MinBackoff)
        {
            throw new ArgumentException("peer transport backoff must satisfy 0 < min <= max");
        }

        ArgumentException.ThrowIfNullOrEmpty(SnapshotDirectory);
    }
}

/// <summary>
/// Client side of a member's own TLS connections (to peers: --peer-client-cert-file or --peer-cert-file and
/// --peer-trusted-ca-file; to other members' client URLs: --client-cert-file or --cert-file and --trusted-ca-file).
/// The files are re-read when they change, so each new connection presents the current certificate and checks the
/// server against the current CA bundle (an empty bundle = the system store). The server side (and
/// --peer-client-cert-auth) is the listener's configuration.
/// </summary>
/// <param name="Material">The certificate presented and the CA bundle trusted, reloaded on change.</param>
public sealed record PeerTlsOptions(KvStore.Server.Hosting.Tls.TlsMaterial Material)
{
    /// <summary>TLS versions for connections to peers (--tls-min-version/--tls-max-version); None = platform default.</summary>
    public System.Security.Authentication.SslProtocols Protocols { get; init; }

    /// <summary>True with --peer-auto-tls: peers present self-signed certificates, which are not verified (as etcd).</summary>
    public bool SkipVerification { get; init; }

    /// <summary>Cipher suites for connections to peers (--cipher-suites); null = platform default.</summary>
    public System.Net.Security.CipherSuitesPolicy? CipherSuites { get; init; }
}
