using KvStore.Server.Replication;
using Xunit;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// Three members in one process on loopback, each with real storage, a real <see cref="RaftHost"/> and a real peer
/// transport: the replicated write path, follower reads, failover, membership and snapshot catch-up.
/// </summary>
public sealed class RaftClusterTests
{
    [Fact]
    public async Task Writes_through_every_member_are_read_linearizably_on_every_member()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var revision = 1L;
        foreach (var writer in cluster.Members)
        {
            var value = $"from-{writer.Name}";
            var rev = await writer.PutAsync("k", value);
            Assert.Equal(revision + 1, rev);
            revision = rev;

            // A linearizable read anywhere, right after the write returned, sees it.
            foreach (var reader in cluster.Members)
            {
                Assert.Equal(value, await reader.GetAsync("k"));
            }
        }

        foreach (var member in cluster.Members)
        {
            Assert.Equal(revision, member.Store.CurrentRevision);
        }
    }

    [Fact]
    public async Task A_sole_voter_leads_without_waiting_out_its_election_timeout_on_first_start_and_on_restart()
    {
        // An election timeout far beyond the bounded wait: only the sole-voter fast path can elect in time.
        var dir = Path.Combine(Path.GetTempPath(), "kvstore-sole-" + Guid.NewGuid().ToString("N")[..8]);
        var port = LoopbackPorts.TakeOne();
        var initial = $"solo=http://127.0.0.1:{port}";
        try
        {
            for (var start = 0; start < 2; start++)
            {
                await using var member = await ClusterMemberHost.StartAsync("solo", dir, port, initial, electionTimeoutMs: 50_000);
                await Bounded.UntilAsync(() => member.State.LeaderId == member.Id, "the sole voter to lead", member);
                (await member.PutAsync("k", $"start-{start}")).Should().Be(start + 2);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Concurrent_writes_from_followers_are_all_applied_in_one_order()
    {
        // A member applies its own proposals from the request it encoded and the others' from the entry's bytes:
        // every member must end with every write as proposed, and each caller gets its own entry's revision.
        await using var cluster = await TestCluster.StartAsync(3);
        var writes = cluster.Members.SelectMany(m => Enumerable.Range(0, 50).Select(i => m.PutAsync($"{m.Name}/{i}", $"{m.Name}-{i}"))).ToList();
        var revisions = await Task.WhenAll(writes);
        Assert.Equal(revisions.Length, revisions.Distinct().Count());
        var last = revisions.Max();
        foreach (var member in cluster.Members)
        {
            await member.GetAsync("m0/0");
            Assert.Equal(last, member.Store.CurrentRevision);
            foreach (var writer in cluster.Members)
            {
                for (var i = 0; i < 50; i++)
                {
                    Assert.Equal($"{writer.Name}-{i}", member.LocalGet($"{writer.Name}/{i}"));
                }
            }
        }

        Assert.Single(cluster.Members.Select(m => m.Store.HashKV(0).Hash).Distinct());
    }

    [Fact]
    public async Task Stopping_the_leader_elects_another_and_writes_resume()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var leader = await cluster.WaitForLeaderAsync();
        await leader.PutAsync("before", "1");
        await leader.StopAsync();

        var survivors = cluster.Members.Where(m => m != leader).ToList();
        var newLeader = await cluster.WaitForLeaderAsync(survivors);
        Assert.NotEqual(leader.Id, newLeader.Id);

        var follower = survivors.Single(m => m != newLeader);
        await follower.PutAsync("after", "2");
        Assert.Equal("1", await newLeader.GetAsync("before"));
        Assert.Equal("2", await newLeader.GetAsync("after"));
    }

    [Fact]
    public async Task Members_are_added_as_learners_promoted_and_removed()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var leader = await cluster.WaitForLeaderAsync();
        await leader.PutAsync("k", "v");

        var port = LoopbackPorts.TakeOne();
        var url = $"http://127.0.0.1:{port}";
        var follower = cluster.Members.First(m => m != leader);
        var added = await follower.Host.Members.AddMemberAsync([url], isLearner: true, CancellationToken.None);
        Assert.True(added.IsLearner);
        foreach (var member in cluster.Members)
        {
            await Bounded.UntilAsync(() => member.Host.Membership.Get(added.Id) is not null, "the learner in every member table", member);
        }

        // A second learner is refused, as etcd allows one at a time.
        var refused = await Assert.ThrowsAsync<EtcdException>(() =>
            leader.Host.Members.AddMemberAsync([$"http://127.0.0.1:{LoopbackPorts.TakeOne()}"], isLearner: true, CancellationToken.None));
        Assert.Equal("etcdserver: too many learner members in cluster", refused.Detail);

        // The new member joins an existing cluster: it asks the peers for the cluster id and its own member id (no
        // bootstrap, everything else from the leader).
        var joined = await ClusterMemberHost.StartAsync(
            "m3",
            Path.Combine(cluster.Root, "m3"),
            port,
            cluster.InitialCluster + $",m3={url}",
            state: "existing");
        cluster.Members.Add(joined);
        Assert.Equal(added.Id, joined.Id);
        Assert.Equal(leader.Identity.ClusterId, joined.Identity.ClusterId);
        await Bounded.UntilAsync(() => joined.LocalGet("k") == "v", "the learner caught up", joined);
        Assert.True(joined.Host.Members.IsLearner);

        await Bounded.UntilAsync(
            () =>
            {
                try
                {
                    leader.Host.Members.PromoteMemberAsync(added.Id, CancellationToken.None).GetAwaiter().GetResult();
                    return true;
                }
                catch (EtcdException e) when (e.Detail.Contains("in sync", StringComparison.Ordinal))
                {
                    return false;
                }
            },
            "the learner promoted",
            leader,
            joined);
        await Bounded.UntilAsync(() => !joined.Host.Members.IsLearner, "the promotion applied on the new member", joined);
        Assert.Equal(4, leader.Host.Membership.VoterCount);

        await joined.PutAsync("from-new", "x");
        Assert.Equal("x", await leader.GetAsync("from-new"));

        await leader.Host.Members.RemoveMemberAsync(added.Id, CancellationToken.None);
        Assert.Null(leader.Host.Membership.Get(added.Id));
        await joined.StopAsync();
        await leader.PutAsync("after-remove", "y");
        Assert.Equal(3, leader.Host.Membership.VoterCount);
    }

    [Fact]
    public async Task A_voter_added_with_member_add_joins_with_state_existing_and_keeps_its_identity_on_restart()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var leader = await cluster.WaitForLeaderAsync();
        await leader.PutAsync("before-join", "1");

        var port = LoopbackPorts.TakeOne();
        var url = $"http://127.0.0.1:{port}";
        var follower = cluster.Members.First(m => m != leader);
        var added = await follower.Host.Members.AddMemberAsync([url], isLearner: false, CancellationToken.None);

        // No cluster id handed in: the joiner asks the peers of --initial-cluster over the peer port.
        var dataDir = Path.Combine(cluster.Root, "m3");
        var joined = await ClusterMemberHost.StartAsync("m3", dataDir, port, cluster.InitialCluster + $",m3={url}", state: "existing");
        cluster.Members.Add(joined);
        Assert.Equal(added.Id, joined.Id);
        Assert.Equal(leader.Identity.ClusterId, joined.Identity.ClusterId);
        Assert.Equal("1", await joined.GetAsync("before-join"));

        await joined.PutAsync("from-joined", "2");
        Assert.Equal("2", await leader.GetAsync("from-joined"));
        Assert.Equal(4, leader.Host.Membership.VoterCount);

        // A restart uses what it stored, whatever --initial-cluster and --initial-cluster-state say now.
        await joined.StopAsync();
        await leader.PutAsync("while-down", "3");
        var restarted = await ClusterMemberHost.StartAsync("m3", dataDir, port, $"m3={url}", state: "new");
        cluster.Members[cluster.Members.IndexOf(joined)] = restarted;
        Assert.Equal(added.Id, restarted.Id);
        Assert.Equal(leader.Identity.ClusterId, restarted.Identity.ClusterId);
        Assert.Equal("3", await restarted.GetAsync("while-down"));
    }

    [Fact]
    public async Task Joining_with_peer_urls_that_no_member_add_created_fails_with_a_clear_error()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var leader = await cluster.WaitForLeaderAsync();
        var addedPort = LoopbackPorts.TakeOne();
        await leader.Host.Members.AddMemberAsync([$"http://127.0.0.1:{addedPort}"], isLearner: true, CancellationToken.None);

        var wrongPort = LoopbackPorts.TakeOne();
        var wrongUrl = $"http://127.0.0.1:{wrongPort}";
        var error = await Assert.ThrowsAsync<ClusterJoinException>(() => ClusterMemberHost.StartAsync(
            "m3", Path.Combine(cluster.Root, "m3"), wrongPort, cluster.InitialCluster + $",m3={wrongUrl}", state: "existing"));
        Assert.Contains($"no member has peer URLs {wrongUrl}", error.Message, StringComparison.Ordinal);
        Assert.Contains($"etcdctl member add m3 --peer-urls={wrongUrl}", error.Message, StringComparison.Ordinal);
        Assert.Contains($"ClusterID:{leader.Identity.ClusterId:x}", error.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(cluster.Root, "m3", Identity.MemberIdentity.FileName)));
    }

    [Fact]
    public async Task A_member_far_behind_catches_up_from_a_snapshot()
    {
        await using var cluster = await TestCluster.StartAsync(3, snapshotCount: 20, catchUpEntries: 5);
        var leader = await cluster.WaitForLeaderAsync();
        var lagging = cluster.Members.First(m => m != leader);
        await lagging.StopAsync();

        for (var i = 0; i < 100; i++)
        {
            await leader.PutAsync($"key-{i % 10}", $"value-{i}");
        }

        var restarted = await ClusterMemberHost.StartAsync(lagging.Name, lagging.DataDir, lagging.Port, cluster.InitialCluster, snapshotCount: 20, catchUpEntries: 5);
        cluster.Members[cluster.Members.IndexOf(lagging)] = restarted;
        await Bounded.UntilAsync(() => restarted.LocalGet("key-9") == "value-99", "the lagging member caught up", restarted);
        Assert.Equal(leader.Store.CurrentRevision, restarted.Store.CurrentRevision);
        Assert.Equal(leader.Store.HashKV(0).Hash, restarted.Store.HashKV(0).Hash);

        await restarted.PutAsync("after-snapshot", "ok");
        Assert.Equal("ok", await leader.GetAsync("after-snapshot"));
    }

    [Fact]
    public async Task A_single_member_is_a_one_voter_raft()
    {
        await using var cluster = await TestCluster.StartAsync(1);
        var only = cluster.Members[0];
        Assert.True(only.IsLeader);
        var revisions = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => only.PutAsync($"k{i}", "v")));
        Assert.Equal(201, revisions.Max());
        Assert.Equal("v", await only.GetAsync("k199"));
    }
}
