namespace KvStore.Raft;

/// <summary>Receives the core's diagnostic lines. Implementations must not call back into the node.</summary>
public interface IRaftLogger
{
    /// <summary>A state change worth tracing (elections, role changes, conflicts).</summary>
    void Info(string message);

    /// <summary>A broken invariant; the core throws <see cref="RaftInvariantException"/> right after.</summary>
    void Panic(string message);
}

/// <summary>Thrown when the core detects a broken invariant (a bug or corrupted storage); the member must stop.</summary>
public sealed class RaftInvariantException : Exception
{
    /// <summary>Creates the exception.</summary>
    public RaftInvariantException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public RaftInvariantException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and cause.</summary>
    public RaftInvariantException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>Source of election jitter. Inject a seeded one for determinism.</summary>
public interface IRaftRandom
{
    /// <summary>Returns a value in [0, <paramref name="maxExclusive"/>).</summary>
    int NextBelow(int maxExclusive);
}

/// <summary>A small deterministic generator (SplitMix64) for election jitter.</summary>
public sealed class SeededRaftRandom : IRaftRandom
{
    private ulong _state;

    /// <summary>Creates a generator; the same seed gives the same sequence on every platform.</summary>
    public SeededRaftRandom(ulong seed) => _state = seed;

    /// <inheritdoc/>
    public int NextBelow(int maxExclusive)
    {
        if (maxExclusive <= 0)
        {
            return 0;
        }

        _state += 0x9E3779B97F4A7C15UL;
        var z = _state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (int)(z % (ulong)maxExclusive);
    }
}
