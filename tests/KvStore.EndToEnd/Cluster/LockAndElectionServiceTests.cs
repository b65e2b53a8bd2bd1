using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using V3Electionpb;
using V3Lockpb;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// The v3lock and v3election gRPC services on a 3-member cluster of real processes, each call sent to a follower as
/// well as to the leader: keys, revisions, waiting for earlier keys to go, and etcd's errors (also runs against real
/// etcd with KVSTORE_E2E_SERVER=etcd).
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class LockAndElectionServiceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Lock_and_election_work_through_followers_and_the_leader_as_in_etcd()
    {
        await using var c = await TestCluster.StartAsync(output, 3);
        var leader = await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(30));
        var followers = c.Members.Where(m => m != leader).ToArray();
        var (f1, f2) = (followers[0], followers[1]);
        var l1 = await GrantAsync(f1, 30);
        var l2 = await GrantAsync(f2, 30);

        // ---- Lock: the first locker holds <name>/<lease hex>; the second waits until the first key is deleted.
        var lock1 = await new V3Lockpb.Lock.LockClient(f1.Channel).LockAsync(new LockRequest { Name = Utf8("lk"), Lease = l1 }, deadline: Deadline());
        lock1.Key.ToStringUtf8().Should().Be($"lk/{l1:x}");
        lock1.Header.MemberId.Should().Be(f1.Id);
        var second = new V3Lockpb.Lock.LockClient(f2.Channel).LockAsync(new LockRequest { Name = Utf8("lk"), Lease = l2 }, deadline: Deadline()).ResponseAsync;
        await UntilAsync(async () => (await TestCluster.GetAsync(leader, $"lk/{l2:x}", CallTimeout)).Kvs.Count == 1, "the second locker's key exists");
        second.IsCompleted.Should().BeFalse("the first lock is held");
        var unlock = await new V3Lockpb.Lock.LockClient(leader.Channel).UnlockAsync(new UnlockRequest { Key = lock1.Key }, deadline: Deadline());
        var lock2 = await second;
        lock2.Key.ToStringUtf8().Should().Be($"lk/{l2:x}");
        lock2.Header.Revision.Should().BeGreaterThanOrEqualTo(unlock.Header.Revision);

        // A waiter whose lease is revoked while it waits: "mutex: session is expired" once it would have the lock
        // (etcd 3.5's mutex; etcd 3.4 answered with the lost key as if it held the lock).
        var l3 = await GrantAsync(f1, 30);
        var third = new V3Lockpb.Lock.LockClient(f1.Channel).LockAsync(new LockRequest { Name = Utf8("lk"), Lease = l3 }, deadline: Deadline()).ResponseAsync;
        await UntilAsync(async () => (await TestCluster.GetAsync(leader, $"lk/{l3:x}", CallTimeout)).Kvs.Count == 1, "the third locker's key exists");
        await new Etcdserverpb.Lease.LeaseClient(leader.Channel).LeaseRevokeAsync(new LeaseRevokeRequest { ID = l3 }, deadline: Deadline());
        await new V3Lockpb.Lock.LockClient(f2.Channel).UnlockAsync(new UnlockRequest { Key = lock2.Key }, deadline: Deadline());
        if (ServerProcess.IsRealEtcd)
        {
            (await third).Key.ToStringUtf8().Should().Be($"lk/{l3:x}");
        }
        else
        {
            await AssertErrorAsync(third, StatusCode.Unknown, "mutex: session is expired");
        }

        // No lease named: a session lease of 60 s is granted for the lock.
        var lock4 = await new V3Lockpb.Lock.LockClient(f2.Channel).LockAsync(new LockRequest { Name = Utf8("auto") }, deadline: Deadline());
        var auto = (await TestCluster.GetAsync(leader, lock4.Key.ToStringUtf8(), CallTimeout)).Kvs.Single().Lease;
        lock4.Key.ToStringUtf8().Should().Be($"auto/{auto:x}");
        (await new Etcdserverpb.Lease.LeaseClient(f1.Channel).LeaseTimeToLiveAsync(new LeaseTimeToLiveRequest { ID = auto }, deadline: Deadline())).GrantedTTL.Should().Be(60);

        // An unknown lease: the put fails underneath and the service reports it as etcd's does.
        await AssertErrorAsync(
            new V3Lockpb.Lock.LockClient(f1.Channel).LockAsync(new LockRequest { Name = Utf8("lk"), Lease = 0x1234 }, deadline: Deadline()).ResponseAsync,
            StatusCode.Unknown,
            "etcdserver: requested lease not found");

        // ---- Election.
        var e1 = new Election.ElectionClient(f1.Channel);
        var e2 = new Election.ElectionClient(f2.Channel);
        var eLeader = new Election.ElectionClient(leader.Channel);
        await AssertErrorAsync(e2.LeaderAsync(new LeaderRequest { Name = Utf8("el") }, deadline: Deadline()).ResponseAsync, StatusCode.Unknown, "election: no leader");

        var won = await e1.CampaignAsync(new CampaignRequest { Name = Utf8("el"), Lease = l1, Value = Utf8("a") }, deadline: Deadline());
        won.Leader.Key.ToStringUtf8().Should().Be($"el/{l1:x}");
        won.Leader.Name.ToStringUtf8().Should().Be("el");
        won.Leader.Lease.Should().Be(l1);
        won.Leader.Rev.Should().Be(won.Header.Revision, "the key was created by the campaign");

        using var observe = e2.Observe(new LeaderRequest { Name = Utf8("el") }, deadline: DateTime.UtcNow.AddSeconds(60));
        (await NextObservedAsync(observe)).Should().Be($"el/{l1:x}=a");
        (await eLeader.LeaderAsync(new LeaderRequest { Name = Utf8("el") }, deadline: Deadline())).Kv.Value.ToStringUtf8().Should().Be("a");

        var proclaimed = await eLeader.ProclaimAsync(new ProclaimRequest { Leader = won.Leader, Value = Utf8("b") }, deadline: Deadline());
        proclaimed.Header.Revision.Should().BeGreaterThan(won.Header.Revision);
        (await NextObservedAsync(observe)).Should().Be($"el/{l1:x}=b");

        var stale = won.Leader.Clone();
        stale.Rev++;
        await AssertErrorAsync(eLeader.ProclaimAsync(new ProclaimRequest { Leader = stale, Value = Utf8("x") }, deadline: Deadline()).ResponseAsync, StatusCode.Unknown, "election: not leader");
        await AssertErrorAsync(eLeader.ProclaimAsync(new ProclaimRequest { Value = Utf8("x") }, deadline: Deadline()).ResponseAsync, StatusCode.Unknown, "\"leader\" field must be provided");
        await AssertErrorAsync(eLeader.ResignAsync(new ResignRequest(), deadline: Deadline()).ResponseAsync, StatusCode.Unknown, "\"leader\" field must be provided");

        // A second candidate waits for the first to resign, then leads; the observer follows.
        var campaign2 = e2.CampaignAsync(new CampaignRequest { Name = Utf8("el"), Lease = l2, Value = Utf8("c") }, deadline: Deadline()).ResponseAsync;
        await UntilAsync(async () => (await TestCluster.GetAsync(leader, $"el/{l2:x}", CallTimeout)).Kvs.Count == 1, "the second candidate's key exists");
        campaign2.IsCompleted.Should().BeFalse("the first candidate leads");
        var resigned = await e1.ResignAsync(new ResignRequest { Leader = won.Leader }, deadline: Deadline());
        var won2 = await campaign2;
        won2.Leader.Key.ToStringUtf8().Should().Be($"el/{l2:x}");
        won2.Leader.Rev.Should().BeLessThan(resigned.Header.Revision, "its key was created while the first led");
        (await NextObservedAsync(observe)).Should().Be($"el/{l2:x}=c");
        (await e1.LeaderAsync(new LeaderRequest { Name = Utf8("el") }, deadline: Deadline())).Kv.Key.ToStringUtf8().Should().Be($"el/{l2:x}");
    }

    [Fact]
    public async Task Etcdctl_lease_keep_alive_lock_and_elect_work_through_a_follower()
    {
        await using var c = await TestCluster.StartAsync(output, 3);
        var leader = await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(30));
        var follower = c.Members.First(m => m != leader);

        // `lease keep-alive` (a stream, renewing every TTL/3) through the follower, stopped after 5 s.
        var lease = await GrantAsync(follower, 6);
        var keepAlive = await RunForAsync(follower, TimeSpan.FromSeconds(5), "lease", "keep-alive", lease.ToString("x", System.Globalization.CultureInfo.InvariantCulture));
        var renewals = keepAlive.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        renewals.Should().HaveCountGreaterThanOrEqualTo(2).And.OnlyContain(l => l == $"lease {lease:x16} keepalived with TTL(6)", keepAlive.Stderr);

        // `lock` through the follower waits for a lock held through the Lock service on the leader.
        var held = await new V3Lockpb.Lock.LockClient(leader.Channel).LockAsync(new LockRequest { Name = Utf8("ctl-lock"), Lease = lease }, deadline: Deadline());
        var locker = c.CtlAsync(follower, ["lock", "ctl-lock", "--", "sh", "-c", "echo got $ETCD_LOCK_KEY"], TimeSpan.FromSeconds(30));
        await UntilAsync(async () => (await TestCluster.GetAsync(leader, "ctl-lock/", CallTimeout, rangeEnd: "ctl-lock0")).Kvs.Count == 2, "etcdctl's lock key exists");
        locker.IsCompleted.Should().BeFalse("the lock is held through the Lock service");
        await new V3Lockpb.Lock.LockClient(follower.Channel).UnlockAsync(new UnlockRequest { Key = held.Key }, deadline: Deadline());
        var locked = await locker;
        locked.ExitCode.Should().Be(0, locked.Stderr);
        locked.Stdout.Should().MatchRegex("^got ctl-lock/[0-9a-f]+\n$");

        // `elect` through the follower: elected at once, visible through the Election service on the leader, and
        // resigned when etcdctl is stopped.
        var elect = await RunForAsync(follower, TimeSpan.FromSeconds(4), "elect", "ctl-el", "v1");
        var lines = elect.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().HaveCount(2, elect.Stderr);
        lines[0].Should().MatchRegex("^ctl-el/[0-9a-f]+$");
        lines[1].Should().Be("v1");
        await AssertErrorAsync(
            new Election.ElectionClient(leader.Channel).LeaderAsync(new LeaderRequest { Name = Utf8("ctl-el") }, deadline: Deadline()).ResponseAsync,
            StatusCode.Unknown,
            "election: no leader");
    }

    /// <summary>Runs etcdctl against <paramref name="m"/> for <paramref name="duration"/>, then stops it with SIGTERM.</summary>
    private static Task<ProcessResult> RunForAsync(ClusterMember m, TimeSpan duration, params string[] args) =>
        Tools.RunAsync(
            Tools.Require("timeout", "coreutils"),
            [$"{duration.TotalSeconds:F0}", Tools.Require("etcdctl", "etcd-client"), "--endpoints", m.Endpoint, .. args],
            env: new Dictionary<string, string> { ["ETCDCTL_API"] = "3" },
            timeout: duration + CallTimeout);

    private static async Task<string> NextObservedAsync(AsyncServerStreamingCall<LeaderResponse> observe)
    {
        using var timeout = new CancellationTokenSource(CallTimeout);
        (await observe.ResponseStream.MoveNext(timeout.Token)).Should().BeTrue();
        var kv = observe.ResponseStream.Current.Kv;
        return $"{kv.Key.ToStringUtf8()}={kv.Value.ToStringUtf8()}";
    }

    private static async Task AssertErrorAsync<T>(Task<T> call, StatusCode code, string message)
    {
        var e = await FluentActions.Awaiting(() => call).Should().ThrowAsync<RpcException>();
        e.Which.StatusCode.Should().Be(code);
        e.Which.Status.Detail.Should().Be(message);
    }

    /// <summary>Re-checks a condition on the cluster every 50 ms, for at most 15 s.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + CallTimeout;
        while (!await condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "waiting for: {0}", what);
            await Task.Delay(50);
        }
    }

    private static async Task<long> GrantAsync(ClusterMember m, long ttl) =>
        (await new Etcdserverpb.Lease.LeaseClient(m.Channel).LeaseGrantAsync(new LeaseGrantRequest { TTL = ttl }, deadline: Deadline())).ID;

    private static DateTime Deadline() => DateTime.UtcNow + CallTimeout;

    private static ByteString Utf8(string s) => ByteString.CopyFromUtf8(s);
}
