using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// A real partition of the peer traffic: three members, each in its own network namespace on a private bridge
/// (<see cref="PeerNetwork"/>), and iptables rules inside those namespaces that silently drop every packet between
/// the leader and the two others. Clients reach each member on 127.0.0.1 inside its namespace (etcdctl through
/// `ip netns exec`), so client traffic is never cut. Needs root, iproute2 and iptables: fails (never skips) without.
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class PeerPartitionTests(ITestOutputHelper output)
{
    private static readonly TimeSpan WriteTimeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Isolated_leader_commits_nothing_and_after_healing_no_acknowledged_write_is_lost_and_every_member_converges()
    {
        using var net = await PeerNetwork.CreateAsync(output, 3);
        await using var c = await TestCluster.StartAsync(output, 3, network: net);
        var ms = c.Members;
        var old = await c.WaitLeaderAsync(ms, TimeSpan.FromSeconds(15));
        var majority = ms.Where(m => m != old).ToList();
        var acked = new Dictionary<string, (string Value, long Revision)>();
        foreach (var m in ms)
        {
            var key = $"/part/before/{m.Name}";
            var put = await c.CtlPutAsync(m, key, m.Name, WriteTimeout);
            put.Error.Should().BeNull("a write through {0} before the partition", m.Name);
            acked[key] = (m.Name, put.Revision);
        }

        await net.IsolateAsync(ms.ToList().IndexOf(old));

        // A write through the isolated leader, at once (it still believes it leads): it cannot commit.
        var minority1 = c.CtlPutAsync(old, "/part/minority/1", "must-not-commit", ClusterTests.FailingWriteCommandTimeout);

        // Meanwhile the majority elects a leader of its own and takes writes through both its members.
        var newLeader = await c.WaitLeaderAsync(majority, TimeSpan.FromSeconds(15));
        newLeader.Should().NotBe(old);
        for (var i = 0; i < 10; i++)
        {
            var m = majority[i % 2];
            var key = $"/part/majority/{i:D2}";
            var put = await c.CtlPutAsync(m, key, m.Name, WriteTimeout);
            put.Error.Should().BeNull("the majority side ({0}) takes writes during the partition", m.Name);
            acked[key] = (m.Name, put.Revision);
        }

        var r1 = await minority1;
        output.WriteLine($"write through the isolated leader {old.Name}: {r1.Error ?? "rev " + r1.Revision} after {r1.Took.TotalMilliseconds:F0} ms");
        r1.Error.Should().NotBeNull("the isolated old leader must not commit a write (it got revision {0})", r1.Revision);
        r1.Error.Should().MatchRegex(ClusterTests.EtcdNoQuorumError().ToString());
        r1.Took.Should().BeLessThan(ClusterTests.NoQuorumFailureBound);

        // Once it has stepped down (check quorum), a second write through it fails too.
        await ClusterTests.WaitAsync($"{old.Name} reports no leader", TimeSpan.FromSeconds(10), async () =>
        {
            var st = await c.TryStatusAsync(old, TimeSpan.FromSeconds(3));
            return (st is { Leader: 0 }, 0, st?.ToString() ?? "no answer");
        });
        var r2 = await c.CtlPutAsync(old, "/part/minority/2", "must-not-commit", ClusterTests.FailingWriteCommandTimeout);
        output.WriteLine($"second write through {old.Name}: {r2.Error ?? "rev " + r2.Revision} after {r2.Took.TotalMilliseconds:F0} ms");
        r2.Error.Should().NotBeNull("the isolated member must not commit a write (it got revision {0})", r2.Revision);
        r2.Error.Should().MatchRegex(ClusterTests.EtcdNoQuorumError().ToString());
        r2.Took.Should().BeLessThan(ClusterTests.NoQuorumFailureBound);

        await net.HealAsync();
        var converged = await c.WaitConvergedAsync(ms, acked.Values.Max(a => a.Revision), TimeSpan.FromSeconds(30));
        await c.WaitLeaderAsync(ms, TimeSpan.FromSeconds(15));
        foreach (var m in ms)
        {
            var local = await c.CtlGetAsync(m, "/part/", prefix: true, serializable: true);
            local.Revision.Should().Be(converged.Revision);
            local.Kvs.Keys.Where(k => k.StartsWith("/part/minority/", StringComparison.Ordinal))
                .Should().BeEmpty("nothing written through the minority side may be visible anywhere after healing ({0})", m.Name);
            foreach (var (key, a) in acked)
            {
                local.Kvs.Should().ContainKey(key).WhoseValue.Should().Be((a.Value, a.Revision), "acknowledged write {0} on {1} after healing", key, m.Name);
            }
        }

        // The healed member takes writes again, and everyone sees them.
        var after = await RetryCtlPutAsync(c, old, "/part/after", "healed", TimeSpan.FromSeconds(20));
        foreach (var m in ms)
        {
            (await c.CtlGetAsync(m, "/part/after")).Kvs.Should().ContainKey("/part/after").WhoseValue.Should().Be(("healed", after), "a linearizable read through {0}", m.Name);
        }

        await c.WaitConvergedAsync(ms, after, TimeSpan.FromSeconds(30));
    }

    private static async Task<long> RetryCtlPutAsync(TestCluster c, ClusterMember m, string key, string value, TimeSpan within)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        string? last = null;
        while (sw.Elapsed < within)
        {
            var put = await c.CtlPutAsync(m, key, value, TimeSpan.FromSeconds(5));
            if (put.Error is null)
            {
                return put.Revision;
            }

            last = put.Error;
            await Task.Delay(200);
        }

        throw new TimeoutException($"a put through {m.Name} did not succeed within {within.TotalSeconds} s; last: {last}");
    }
}
