using System.Globalization;
using Grpc.Core;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// The NOSPACE alarm on a real 3-member cluster: raised by the member whose quota is exceeded, replicated through the
/// log, enforced by every member at the same log index (whatever their own --quota-backend-bytes), listed the same
/// through every member, disarmed cluster-wide through any member; the members stay identical throughout.
/// Runs against real etcd 3.4 too (KVSTORE_E2E_SERVER=etcd).
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class AlarmClusterTests(ITestOutputHelper output)
{
    private const long QuotaBytes = 8 * 1024 * 1024;
    private const string NoSpace = "etcdserver: mvcc: database space exceeded";
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10);

    /// <param name="quotaOnEveryMember">The quota on every member, or only on member 0 (the others keep the 2 GiB default).</param>
    /// <param name="fillThrough">The member the big values are written through: member 1 with the quota only on member 0
    /// means member 0 must notice by itself, after applying writes it never saw as a client request.</param>
    [Theory]
    [InlineData(true, 0)]
    [InlineData(false, 0)]
    [InlineData(false, 1)]
    public async Task Nospace_raised_by_one_member_refuses_writes_through_every_member_until_disarmed_through_another(bool quotaOnEveryMember, int fillThrough)
    {
        var quota = new[] { "--quota-backend-bytes", QuotaBytes.ToString(CultureInfo.InvariantCulture) };
        await using var c = await TestCluster.StartAsync(output, 3, memberArgs: i => quotaOnEveryMember || i == 0 ? quota : []);
        var ms = c.Members;
        var leader = await c.WaitLeaderAsync(ms, TimeSpan.FromSeconds(15));
        var filler = ms[fillThrough];
        output.WriteLine($"leader {leader.Name}; filling through {filler.Name} ({(filler == leader ? "the leader" : "a follower")})");

        // 1. ~900 KB values (one key, overwritten) until a put is refused: about the 10th.
        var big = new string('x', 900 * 1024);
        RpcException? refused = null;
        for (var i = 0; i < 30 && refused is null; i++)
        {
            try
            {
                await TestCluster.PutAsync(filler, "/big", big + i.ToString(CultureInfo.InvariantCulture), CallTimeout);
            }
            catch (RpcException e)
            {
                refused = e;
                output.WriteLine($"put {i + 1} of 900 KB refused: {e.StatusCode} {e.Status.Detail}");
            }
        }

        refused.Should().NotBeNull("an 8 MiB quota cannot hold 30 values of 900 KB");
        refused!.StatusCode.Should().Be(StatusCode.ResourceExhausted);
        refused.Status.Detail.Should().Be(NoSpace);

        // 2. The alarms are listed the same through every member: member 0's at least (a member whose quota the same
        //    writes exceeded may have raised its own too, as etcd's members do)...
        var alarms = await AgreedAlarmListAsync(c, ms);
        alarms.Should().Contain($"memberID:{ms[0].Id} alarm:NOSPACE");
        if (!quotaOnEveryMember)
        {
            alarms.Should().Equal([$"memberID:{ms[0].Id} alarm:NOSPACE"], "only member 0 has a quota that 8 MiB exceeds");
        }

        // ...and every member refuses small puts, also those whose own quota has room.
        foreach (var m in ms)
        {
            var put = await c.CtlPutAsync(m, "/after/" + m.Name, "small", TimeSpan.FromSeconds(15));
            put.Error.Should().Be("Error: " + NoSpace, "a put through {0} while NOSPACE is active", m.Name);
        }

        var stuck = await c.WaitConvergedAsync(ms, 1, TimeSpan.FromSeconds(30));
        foreach (var m in ms)
        {
            (await c.CtlGetAsync(m, "/after/", prefix: true, serializable: true)).Kvs.Should().BeEmpty("no member applied a refused put ({0})", m.Name);
        }

        // 3. Free the space (compact away the old values, defragment every member), then disarm through another member.
        (await c.CtlAsync(ms[1], ["compact", stuck.Revision.ToString(CultureInfo.InvariantCulture), "--physical"])).ExitCode.Should().Be(0);
        foreach (var m in ms)
        {
            var defrag = await c.CtlAsync(m, ["defrag"], TimeSpan.FromSeconds(60));
            defrag.ExitCode.Should().Be(0, "defrag {0}: {1}", m.Name, TestCluster.ErrorLine(defrag));
        }

        var disarm = await c.CtlOkAsync(ms[2], "alarm", "disarm");
        disarm.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Should().Contain(alarms, "disarm clears every listed alarm");
        (await AgreedAlarmListAsync(c, ms)).Should().BeEmpty("the alarms are disarmed cluster-wide");

        // 4. Every member takes writes again; all end identical.
        long last = 0;
        foreach (var m in ms)
        {
            var put = await c.CtlPutAsync(m, "/after/" + m.Name, "small", TimeSpan.FromSeconds(15));
            put.Error.Should().BeNull("a put through {0} after the disarm", m.Name);
            last = put.Revision;
        }

        await c.WaitConvergedAsync(ms, last, TimeSpan.FromSeconds(30));
        foreach (var m in ms)
        {
            (await c.CtlGetAsync(m, "/after/", prefix: true, serializable: true)).Kvs.Should().HaveCount(3, "{0} applied every put after the disarm", m.Name);
        }
    }

    [Fact]
    public async Task An_alarm_survives_a_SIGKILL_and_restart_of_every_member()
    {
        await using var c = await TestCluster.StartAsync(output, 3);
        var ms = c.Members;
        await c.WaitLeaderAsync(ms, TimeSpan.FromSeconds(15));
        var put = await c.CtlPutAsync(ms[0], "/before", "1", TimeSpan.FromSeconds(15));
        put.Error.Should().BeNull();

        // Raise NOSPACE for member 1 through the Maintenance API (as a member whose quota is exceeded does).
        await new Etcdserverpb.Maintenance.MaintenanceClient(ms[1].Channel).AlarmAsync(
            new Etcdserverpb.AlarmRequest { Action = Etcdserverpb.AlarmRequest.Types.AlarmAction.Activate, MemberID = ms[1].Id, Alarm = Etcdserverpb.AlarmType.Nospace },
            deadline: DateTime.UtcNow + CallTimeout);

        // SIGKILL: the alarm must come back from what reached the disk (WAL replay after the last checkpoint).
        foreach (var m in ms)
        {
            m.Kill();
        }

        foreach (var m in ms)
        {
            m.Start(c.InitialCluster, "new", c.Token, c.ExtraArgs);
        }

        await Task.WhenAll(ms.Select(m => c.WaitHealthyAsync(m, TestCluster.StartTimeout)));
        foreach (var m in ms)
        {
            (await AlarmListAsync(c, m)).Should().Equal([$"memberID:{ms[1].Id} alarm:NOSPACE"], "`alarm list` through {0} after the restart", m.Name);
            (await c.CtlPutAsync(m, "/refused", "x", TimeSpan.FromSeconds(15))).Error.Should().Be("Error: " + NoSpace, "{0} still refuses puts", m.Name);
        }

        await c.WaitConvergedAsync(ms, put.Revision, TimeSpan.FromSeconds(30));
    }

    /// <summary>
    /// `alarm list` through every member until all answer the same set (a member whose quota was exceeded by a write it
    /// applied may raise its own alarm a moment later, as etcd's members do), bounded; etcd lists in no fixed order.
    /// </summary>
    private static async Task<IReadOnlyList<string>> AgreedAlarmListAsync(TestCluster c, IReadOnlyList<ClusterMember> ms) =>
        await ClusterTests.WaitAsync("the same `alarm list` through every member", TimeSpan.FromSeconds(15), async () =>
        {
            var lists = new List<IReadOnlyList<string>>();
            foreach (var m in ms)
            {
                lists.Add(await AlarmListAsync(c, m));
            }

            var agreed = lists.All(l => l.Order().SequenceEqual(lists[0].Order()));
            return (agreed, lists[0], string.Join(" | ", ms.Zip(lists, (m, l) => $"{m.Name}: {string.Join(", ", l)}")));
        });

    private static async Task<IReadOnlyList<string>> AlarmListAsync(TestCluster c, ClusterMember m)
    {
        var output = await c.CtlOkAsync(m, "alarm", "list");
        return [.. output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }
}
