using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// Recovering from the loss of a quorum with --force-new-cluster (operations.md's runbook): the survivor restarts as a
/// one-member cluster with all its data, then grows back to three members by `member add`.
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed partial class DisasterRecoveryTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Survivor_of_a_lost_quorum_restarts_alone_with_its_data_and_grows_back()
    {
        await using var c = await TestCluster.StartAsync(output, 3);
        var leader = await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(15));
        long last = 0;
        for (var i = 0; i < 300; i++)
        {
            last = await TestCluster.PutAsync(c.Members[i % 3], $"/dr/{i % 100:D3}", $"v{i}", CallTimeout);
        }

        await c.CtlOkAsync(leader, "compaction", TestCluster.Fmt(last - 50));
        var before = await c.WaitConvergedAsync(c.Members, last, TimeSpan.FromSeconds(30));

        // Lose two members for good (process and data), then the survivor goes down too.
        var survivor = c.Members[0];
        var lost = c.Members.Skip(1).ToList();
        foreach (var m in lost)
        {
            m.Kill();
            Directory.Delete(m.DataDir, recursive: true);
        }

        survivor.Kill();
        survivor.Start(c.InitialCluster, "new", c.Token, [.. c.ExtraArgs, "--force-new-cluster"]);
        await c.WaitHealthyAsync(survivor, TestCluster.StartTimeout);
        (await c.MemberListAsync(survivor)).Select(m => m.Id).Should().Equal(survivor.Id);
        (await c.HashKvAsync(survivor)).Should().Be(before, "the data, the revision and the compaction point are intact");
        var r = await TestCluster.GetAsync(survivor, "/dr/", CallTimeout, rangeEnd: TestCluster.PrefixEnd("/dr/"));
        r.Kvs.Should().HaveCount(100);
        r.Kvs.Max(kv => kv.ModRevision).Should().Be(last);

        // Restarted without the flag it stays a one-member cluster.
        survivor.Kill();
        survivor.Start(c.InitialCluster, "new", c.Token, c.ExtraArgs);
        await c.WaitHealthyAsync(survivor, TestCluster.StartTimeout);
        (await c.MemberListAsync(survivor)).Should().ContainSingle();
        var afterRecovery = await TestCluster.PutAsync(survivor, "/dr/after", "x", CallTimeout);
        afterRecovery.Should().Be(last + 1);

        // Grow back: each lost member is added again and starts empty with state existing.
        foreach (var m in lost)
        {
            var newName = m.Name + "-new";
            var add = await ClusterTests.WaitAsync($"member add {newName} is accepted", TimeSpan.FromSeconds(20), async () =>
            {
                var result = await c.CtlAsync(survivor, ["member", "add", newName, "--peer-urls=" + m.PeerUrl]);
                return (result.ExitCode == 0, result.Stdout, result.ToString());
            });
            var initialCluster = InitialClusterLine().Match(add).Groups[1].Value;
            m.Start(initialCluster, "existing", c.Token, c.ExtraArgs, newName);
            await c.WaitHealthyAsync(m, TestCluster.StartTimeout);
        }

        var converged = await c.WaitConvergedAsync(c.Members, afterRecovery, TimeSpan.FromSeconds(60));
        converged.Revision.Should().Be(afterRecovery);
        foreach (var m in c.Members)
        {
            (await c.MemberListAsync(m)).Should().HaveCount(3);
            var kvs = await TestCluster.GetAsync(m, "/dr/", CallTimeout, rangeEnd: TestCluster.PrefixEnd("/dr/"));
            kvs.Kvs.Should().HaveCount(101);
        }
    }

    [Fact]
    public async Task Whole_cluster_restored_from_one_snapshot_serves_the_same_history()
    {
        await using var c = await TestCluster.StartAsync(output, 3);
        var leader = await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(15));
        long last = 0;
        for (var i = 0; i < 200; i++)
        {
            last = await TestCluster.PutAsync(c.Members[i % 3], $"/bk/{i % 50:D2}", $"v{i}", CallTimeout);
        }

        var lease = (await c.CtlOkAsync(leader, "lease", "grant", "900")).Split(' ')[1];
        await c.CtlOkAsync(leader, "put", "/bk/leased", "x", "--lease=" + lease);
        await c.CtlOkAsync(leader, "compaction", TestCluster.Fmt(last - 20));
        var before = await c.WaitConvergedAsync(c.Members, last + 1, TimeSpan.FromSeconds(30));
        var file = Path.Combine(Path.GetDirectoryName(c.Members[0].DataDir)!, "backup.db");
        await c.CtlOkAsync(c.Members[1], "snapshot", "save", file);

        // Everything is lost; every member is restored from the one file with its own name and peer URL.
        foreach (var m in c.Members)
        {
            m.Kill();
            Directory.Delete(m.DataDir, recursive: true);
            var restore = await Tools.RunAsync(ServerProcess.KvStorePath, [
                "snapshot", "restore", file, "--data-dir", m.DataDir, "--name", m.Name, "--initial-cluster", c.InitialCluster,
                "--initial-cluster-token", c.Token + "-restored", "--initial-advertise-peer-urls", m.PeerUrl,
            ]);
            restore.ExitCode.Should().Be(0, restore.ToString());
        }

        foreach (var m in c.Members)
        {
            m.Start(c.InitialCluster, "new", c.Token + "-restored", c.ExtraArgs);
        }

        foreach (var m in c.Members)
        {
            await c.WaitHealthyAsync(m, TestCluster.StartTimeout);
        }

        var after = await c.WaitConvergedAsync(c.Members, before.Revision, TimeSpan.FromSeconds(30));
        after.Should().Be(before);
        (await c.MemberListAsync(c.Members[2])).Should().HaveCount(3);
        (await c.CtlOkAsync(c.Members[2], "lease", "list")).Should().Contain(lease);
        var next = await TestCluster.PutAsync(c.Members[2], "/bk/after", "y", CallTimeout);
        next.Should().Be(before.Revision + 1);
    }

    [GeneratedRegex("ETCD_INITIAL_CLUSTER=\"([^\"]+)\"")]
    private static partial Regex InitialClusterLine();
}
