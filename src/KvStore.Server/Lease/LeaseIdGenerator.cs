namespace KvStore.Server.Lease;

/// <summary>
/// Lease IDs for grants that do not choose one. Same layout as etcd's request IDs so IDs look familiar and stay
/// unique across restarts: 16 bits of member ID, 40 bits of start time in milliseconds, 8 bits of counter; the counter
/// carries into the time bits. The sign bit is always cleared (IDs are positive).
/// </summary>
public sealed class LeaseIdGenerator
{
    private const int SuffixBits = 48;
    private const ulong SuffixMask = (1UL << SuffixBits) - 1;
    private readonly ulong _prefix;
    private ulong _suffix;

    /// <summary>Starts a generator for a member at a wall-clock time.</summary>
    public LeaseIdGenerator(ulong memberId, DateTimeOffset now)
    {
        _prefix = (memberId & 0xFFFF) << SuffixBits;
        var millis = (ulong)now.ToUnixTimeMilliseconds() & ((1UL << 40) - 1);
        _suffix = millis << 8;
    }

    /// <summary>The next ID: never 0 (0 means "no lease") and never negative.</summary>
    public long Next()
    {
        while (true)
        {
            var suffix = Interlocked.Increment(ref _suffix);
            var id = (long)((_prefix | (suffix & SuffixMask)) & long.MaxValue);
            if (id != 0)
            {
                return id;
            }
        }
    }
}
