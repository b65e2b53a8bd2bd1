namespace KvStore.Server.Lease;

/// <summary>Lease settings, derived from etcd's timing flags (see <see cref="FromTiming"/>).</summary>
public sealed class LessorOptions
{
    /// <summary>The longest TTL a lease may have (etcd: 9,000,000,000 s); larger grants fail with "too large lease TTL".</summary>
    public const long MaxLeaseTtl = 9_000_000_000;

    /// <summary>
    /// TTLs below this are raised to it, so a lease cannot expire during a normal leader election.
    /// etcd uses ceil(1.5 × election timeout); with its defaults (100 ms heartbeat, 10 ticks) that is 2 s.
    /// </summary>
    public long MinTtlSeconds { get; set; } = 2;

    /// <summary>On becoming leader every lease is extended by this much (etcd: one election timeout).</summary>
    public TimeSpan PromoteExtension { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How often the leader looks for expired leases (etcd: 500 ms).</summary>
    public TimeSpan ExpiryCheckInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>After proposing a revoke for an expired lease, wait this long before proposing it again (etcd: 3 s).</summary>
    public TimeSpan ExpiredRetryInterval { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>At most this many expired leases are proposed for revocation per check (etcd revokes ≤ 500 per 500 ms).</summary>
    public int MaxRevokesPerCheck { get; set; } = 500;

    /// <summary>
    /// --experimental-enable-lease-checkpoint: the leader proposes remaining TTLs every <see cref="CheckpointInterval"/>,
    /// so a new leader resumes them instead of restarting every lease at its full TTL.
    /// </summary>
    public bool CheckpointEnabled { get; set; }

    /// <summary>--experimental-lease-checkpoint-interval (etcd: 5 minutes; 0 means the default).</summary>
    public TimeSpan CheckpointInterval { get; set; } = DefaultCheckpointInterval;

    /// <summary>etcd's default checkpoint interval.</summary>
    public static readonly TimeSpan DefaultCheckpointInterval = TimeSpan.FromMinutes(5);

    /// <summary>At most this many remaining TTLs go into one checkpoint proposal (etcd: 1000).</summary>
    public int MaxCheckpointsPerProposal { get; set; } = 1000;

    /// <summary>This member's ID; the high 16 bits of generated lease IDs come from it, as in etcd.</summary>
    public ulong MemberId { get; set; }

    /// <summary>Options for etcd's <c>--heartbeat-interval</c> and <c>--election-timeout</c> (milliseconds).</summary>
    public static LessorOptions FromTiming(long heartbeatMs, long electionTimeoutMs, ulong memberId)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heartbeatMs);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(electionTimeoutMs);
        // etcd counts the election timeout in heartbeat ticks and takes 3/2 of it (integer division on ticks).
        var electionTicks = electionTimeoutMs / heartbeatMs;
        var minTtlMs = 3 * electionTicks / 2 * heartbeatMs;
        return new LessorOptions
        {
            MinTtlSeconds = Math.Max(1, (minTtlMs + 999) / 1000),
            PromoteExtension = TimeSpan.FromMilliseconds(electionTicks * heartbeatMs),
            MemberId = memberId,
        };
    }
}
