namespace KvStore.Raft.Tests.Simulation;

/// <summary>The scheduler's deterministic random source (SplitMix64), independent of the nodes' election jitter.</summary>
internal sealed class SimRandom(ulong seed)
{
    private ulong _state = seed ^ 0xD1B54A32D192ED03UL;

    public ulong NextU64()
    {
        _state += 0x9E3779B97F4A7C15UL;
        var z = _state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public int Next(int maxExclusive) => maxExclusive <= 0 ? 0 : (int)(NextU64() % (ulong)maxExclusive);

    public bool Chance(int percent) => Next(100) < percent;

    public T Pick<T>(IReadOnlyList<T> items) => items[Next(items.Count)];
}
