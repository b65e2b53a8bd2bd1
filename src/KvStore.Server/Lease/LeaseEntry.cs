using KvStore.Storage;
namespace KvStore.Server.Lease;

/// <summary>One lease as the lessor holds it in memory. Guarded by the lessor's lock.</summary>
internal sealed class LeaseEntry(long id, long ttl)
{
    public long Id { get; } = id;

    /// <summary>Granted TTL in seconds (after raising to the minimum).</summary>
    public long Ttl { get; } = ttl;

    /// <summary>A checkpointed remaining TTL (seconds), 0 if none; used instead of <see cref="Ttl"/> on promotion.</summary>
    public long RemainingTtl { get; set; }

    /// <summary>Monotonic expiry (time since the lessor's origin); <see cref="TimeSpan.MaxValue"/> = never (not leader).</summary>
    public TimeSpan Expiry { get; set; } = TimeSpan.MaxValue;

    /// <summary>When the leader may propose this lease's revocation again (after a proposal that did not apply yet).</summary>
    public TimeSpan RetryRevokeAt { get; set; } = TimeSpan.Zero;

    /// <summary>When the leader proposes this lease's remaining TTL next; <see cref="TimeSpan.MaxValue"/> = not scheduled.</summary>
    public TimeSpan NextCheckpointAt { get; set; } = TimeSpan.MaxValue;

    public HashSet<byte[]> Keys { get; } = new(ByteKeyComparer.Instance);

    /// <summary>Completes when the lease is revoked (keep-alives on an expired lease wait for it).</summary>
    public TaskCompletionSource Revoked { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}
