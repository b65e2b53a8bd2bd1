using System.Globalization;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// The corruption checks against a member whose store really diverged: one follower's value is changed on disk while it
/// is stopped (kvstore-damage, the test-only tool, rewrites the record beside the raft log), so its revision and log
/// agree with its peers while its key space does not. The leader's periodic check must raise CORRUPT for it through
/// the log (listed by every member, writes refused everywhere) and log both hashes; the initial check must keep it from
/// starting at all. kvstore only: the tool writes kvstore's store format.
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class CorruptionCheckTests(ITestOutputHelper output)
{
    private const string CorruptCluster = "etcdserver: corrupt cluster";

    [Fact]
    public async Task A_member_damaged_offline_is_found_by_the_periodic_check_and_refused_by_the_initial_check()
    {
        var damageTool = Path.Combine(ServerProcess.RepoRoot, "artifacts", "bin", "KvStore.StoreDamage", "release", "kvstore-damage");
        File.Exists(damageTool).Should().BeTrue("the damage tool is built with the solution ({0})", damageTool);

        await using var c = await TestCluster.StartAsync(output, 3, ["--experimental-corrupt-check-time", "1s"]);
        var ms = c.Members;
        var leader = await c.WaitLeaderAsync(ms, TimeSpan.FromSeconds(15));
        long last = 0;
        foreach (var (key, value) in new[] { ("/a", "1"), ("/victim", "good"), ("/c", "3") })
        {
            var put = await c.CtlPutAsync(leader, key, value, TimeSpan.FromSeconds(15));
            put.Error.Should().BeNull();
            last = put.Revision;
        }

        var good = await c.WaitConvergedAsync(ms, last, TimeSpan.FromSeconds(30));
        var victim = ms.First(m => m != leader);
        var healthy = ms.Where(m => m != victim).ToList();

        // 1. Damage the stopped follower: same revision, same raft log, one different value.
        (await victim.TerminateAsync(TimeSpan.FromSeconds(30))).Should().Be(0);
        var damage = await Tools.RunAsync(damageTool, [victim.DataDir, "/victim", "damaged"], timeout: TimeSpan.FromSeconds(60));
        damage.ExitCode.Should().Be(0, damage.ToString());
        output.WriteLine(damage.Stdout.Trim());

        // 2. Restarted without the initial check, it rejoins; within a few check intervals the leader raises CORRUPT.
        victim.Start(c.InitialCluster, "existing", c.Token, c.ExtraArgs);
        var expected = $"memberID:{victim.Id} alarm:CORRUPT";
        await ClusterTests.WaitAsync("the CORRUPT alarm listed through every member", TimeSpan.FromSeconds(60), async () =>
        {
            victim.EnsureRunning("while waiting for the alarm");
            var lists = new List<string>();
            foreach (var m in ms)
            {
                var r = await c.CtlAsync(m, ["alarm", "list"], TimeSpan.FromSeconds(5));
                lists.Add(r.ExitCode == 0 ? r.Stdout.Trim() : "error: " + TestCluster.ErrorLine(r));
            }

            return (lists.All(l => l == expected), 0, string.Join(" | ", ms.Zip(lists, (m, l) => $"{m.Name}: {l}")));
        });

        foreach (var m in ms)
        {
            var put = await c.CtlPutAsync(m, "/after/" + m.Name, "x", TimeSpan.FromSeconds(15));
            put.Error.Should().Be("Error: " + CorruptCluster, "a put through {0} while CORRUPT is active", m.Name);
        }

        // The damaged member answers HashKV at the same revision with its own hash; the leader logged both.
        var damaged = await c.HashKvAsync(victim);
        damaged.Revision.Should().Be(good.Revision);
        damaged.Hash.Should().NotBe(good.Hash);
        var periodicLine = $"member {victim.HexId} is inconsistent with leader {leader.HexId} at revision {Fmt(good.Revision)}: leader hash {Fmt(good.Hash)}, member hash {Fmt(damaged.Hash)}";
        leader.LogContains(periodicLine).Should().BeTrue("the leader logs the member, the revision and both hashes: {0}", periodicLine);
        foreach (var m in healthy)
        {
            (await c.HashKvAsync(m)).Hash.Should().Be(good.Hash, "{0} was not damaged", m.Name);
        }

        // 3. With --experimental-initial-corrupt-check the damaged member refuses to start: exit 1, both hashes logged.
        (await victim.TerminateAsync(TimeSpan.FromSeconds(30))).Should().Be(0);
        victim.Start(c.InitialCluster, "existing", c.Token, [.. c.ExtraArgs, "--experimental-initial-corrupt-check"]);
        (await victim.WaitExitAsync(TimeSpan.FromSeconds(60))).Should().Be(1, victim.LogTail(40));
        var initialLine = $"member {victim.HexId} differs from peer {{0}} at revision {Fmt(good.Revision)}: local hash {Fmt(damaged.Hash)}, peer hash {Fmt(good.Hash)}";
        foreach (var m in healthy)
        {
            var line = string.Format(CultureInfo.InvariantCulture, initialLine, m.HexId);
            victim.LogContains(line).Should().BeTrue("the refused start names the peer, the revision and both hashes: {0}\n{1}", line, victim.LogTail(40));
        }

        victim.LogContains($"{victim.HexId} found data inconsistency with peers").Should().BeTrue(victim.LogTail(40));

        // The healthy members are unaffected by the refused start and still hold the alarm.
        foreach (var m in healthy)
        {
            (await c.CtlOkAsync(m, "alarm", "list")).Trim().Should().Be(expected);
        }
    }

    private static string Fmt(long v) => v.ToString(CultureInfo.InvariantCulture);
}
