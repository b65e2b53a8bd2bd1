using KvStore.Raft.Storage;

namespace KvStore.Raft.Tests.Simulation;

/// <summary>
/// One simulated member: its durable storage (survives crashes), its running node (null while crashed) and its
/// state machine, which is a rolling hash of every applied entry (rebuilt from the snapshot on restart).
/// </summary>
internal sealed class SimMember(ulong id, bool initial)
{
    public ulong Id { get; } = id;

    /// <summary>Bootstrapped with the initial cluster (otherwise it joins through a conf change).</summary>
    public bool Initial { get; } = initial;

    /// <summary>What was persisted per the Ready contract. Survives crashes.</summary>
    public InMemoryRaftStorage Storage { get; } = new();

    /// <summary>Chain hash of the persisted log: <c>LogChain[k]</c> covers indexes up to <c>LogChainBase + k</c>. Durable.</summary>
    public List<ulong> LogChain { get; } = [0];

    public ulong LogChainBase { get; set; }

    public RaftNode? Node { get; set; }

    public int Incarnation { get; set; }

    public bool IsUp => Node is not null;

    /// <summary>State machine: last applied index and the chain hash of the applied prefix.</summary>
    public ulong SmApplied { get; set; }

    public ulong SmChain { get; set; }

    /// <summary>Commit index last observed by the checker for the current incarnation.</summary>
    public ulong ObservedCommit { get; set; }

    public ulong ChainAt(ulong index) => LogChain[(int)(index - LogChainBase)];
}

/// <summary>Hash chain over log entries: equal chains at an index mean equal prefixes (with overwhelming probability).</summary>
internal static class ChainHash
{
    public static ulong Next(ulong prev, Entry e)
    {
        var h = prev ^ 0x9E3779B97F4A7C15UL;
        h = Mix(h ^ e.Index);
        h = Mix(h ^ e.Term);
        h = Mix(h ^ (ulong)e.Type);
        foreach (var b in e.Data.Span)
        {
            h = (h ^ b) * 0x100000001B3UL;
        }

        return Mix(h);
    }

    public static byte[] Encode(ulong chain) => BitConverter.GetBytes(chain);

    public static ulong Decode(ReadOnlyMemory<byte> data) => BitConverter.ToUInt64(data.Span);

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
