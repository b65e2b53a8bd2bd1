using KvStore.Raft.Tests.Simulation;

namespace KvStore.Raft.Tests;

/// <summary>Shorthands for scripted scenarios on a <see cref="SimCluster"/>.</summary>
internal static class ClusterTestExtensions
{
    /// <summary>A cluster whose bootstrap entries are persisted and applied everywhere.</summary>
    public static SimCluster Started(int size, SimOptions? options = null)
    {
        var c = new SimCluster(size, options ?? new SimOptions());
        c.Stabilize();
        return c;
    }

    /// <summary>Makes <paramref name="id"/> campaign and lets the election play out.</summary>
    public static SimCluster Elect(this SimCluster c, ulong id, Func<Message, bool>? drop = null)
    {
        c.Node(id).Campaign();
        c.Stabilize(drop);
        return c;
    }

    /// <summary>Proposes through <paramref name="via"/> and lets it replicate; returns the immediate result.</summary>
    public static RequestResult ProposeAndSettle(this SimCluster c, ulong via, Func<Message, bool>? drop = null)
    {
        var r = c.Propose(via, out _);
        c.Stabilize(drop);
        return r;
    }
}
