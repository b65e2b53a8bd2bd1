using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Lease;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Lease;

public sealed class LessorTests : IDisposable
{
    private readonly ManualTimeProvider _time = new();
    private readonly Dictionary<string, byte[]> _meta = [];
    private readonly LessorOptions _options = LessorOptions.FromTiming(100, 1000, memberId: 0x1234);
    private readonly Lessor _lessor;
    private long _revision = 1;

    public LessorTests()
    {
        _lessor = NewLessor();
    }

    public void Dispose() => _lessor.Dispose();

    [Fact]
    public void Etcd_default_timing_gives_a_two_second_minimum_ttl_and_one_second_promotion_extension()
    {
        _options.MinTtlSeconds.Should().Be(2);
        _options.PromoteExtension.Should().Be(TimeSpan.FromSeconds(1));
        LessorOptions.FromTiming(50, 500, 0).MinTtlSeconds.Should().Be(1);
        LessorOptions.FromTiming(100, 5000, 0).MinTtlSeconds.Should().Be(8);
    }

    [Theory]
    [InlineData(0, 2)]
    [InlineData(1, 2)]
    [InlineData(2, 2)]
    [InlineData(3, 3)]
    [InlineData(600, 600)]
    public void The_grant_to_propose_raises_the_ttl_to_the_minimum_and_apply_persists_it(long requested, long granted)
    {
        var proposed = _lessor.PrepareGrant(new LeaseGrantRequest { ID = 7, TTL = requested });
        proposed.TTL.Should().Be(granted, "the member-local minimum is decided before proposing");
        var response = _lessor.ApplyGrant(proposed, new FakeLeaseTxn(_revision, _meta));
        response.ID.Should().Be(7);
        response.TTL.Should().Be(granted);
        response.Header.Revision.Should().Be(_revision, "a grant does not change the revision");
        var record = _meta["lease/0000000000000007"];
        Lessor.DecodeRecord(Lessor.EncodeKey(7), record).Should().Be((7L, granted, 0L));
        _lessor.Exists(7).Should().BeTrue();
    }

    [Fact]
    public void Apply_takes_the_ttl_written_in_the_entry_whatever_this_members_minimum()
    {
        // Proposed by a member with a shorter election timeout: applied as written, so every member agrees.
        Grant(8, 1).TTL.Should().Be(1);
        _lessor.PrepareGrant(new LeaseGrantRequest { TTL = 5 }).ID.Should().NotBe(0, "an ID is chosen when the client left it 0");
    }

    [Fact]
    public void Grant_errors_are_etcds_and_leave_no_trace()
    {
        Grant(5, 60);
        var count = _meta.Count;

        Assert(() => Grant(5, 60), StatusCode.FailedPrecondition, "etcdserver: lease already exists");
        Assert(() => Grant(0, 60), StatusCode.NotFound, "etcdserver: requested lease not found");
        Assert(() => Grant(6, LessorOptions.MaxLeaseTtl + 1), StatusCode.OutOfRange, "etcdserver: too large lease TTL");
        _meta.Should().HaveCount(count);
        _lessor.Count.Should().Be(1);

        static void Assert(Action act, StatusCode code, string message) =>
            act.Should().Throw<RpcException>().Where(e => e.StatusCode == code && e.Status.Detail == message);
    }

    [Fact]
    public void Revoke_deletes_attached_keys_in_key_order_and_the_record_in_one_transaction()
    {
        Grant(9, 60);
        Grant(10, 60);
        _lessor.OnPut("b"u8.ToArray(), 0, 9);
        _lessor.OnPut("a"u8.ToArray(), 0, 9);
        _lessor.OnPut("c"u8.ToArray(), 0, 9);
        _lessor.OnPut("c"u8.ToArray(), 9, 10); // moved to another lease
        _lessor.OnPut("d"u8.ToArray(), 0, 9);
        _lessor.OnDelete("d"u8.ToArray(), 9);

        var txn = new FakeLeaseTxn(_revision, _meta);
        var response = _lessor.ApplyRevoke(new LeaseRevokeRequest { ID = 9 }, txn);

        txn.Deleted.Should().Equal("a", "b");
        response.Header.Revision.Should().Be(txn.Revision, "the deletes bump the revision once");
        _meta.Should().NotContainKey("lease/0000000000000009");
        _lessor.Exists(9).Should().BeFalse();
        _lessor.TimeToLive(10, withKeys: true)!.Keys.Select(k => k.ToStringUtf8()).Should().Equal("c");
    }

    [Fact]
    public void Revoking_a_lease_without_keys_keeps_the_revision_and_unknown_leases_are_not_found()
    {
        Grant(3, 60);
        _lessor.ApplyRevoke(new LeaseRevokeRequest { ID = 3 }, new FakeLeaseTxn(_revision, _meta)).Header.Revision.Should().Be(_revision);
        var act = () => _lessor.ApplyRevoke(new LeaseRevokeRequest { ID = 3 }, new FakeLeaseTxn(_revision, _meta));
        act.Should().Throw<RpcException>().Where(e => e.StatusCode == StatusCode.NotFound);
    }

    [Fact]
    public void Time_to_live_counts_down_on_the_leader_and_lists_sorted_keys()
    {
        _lessor.Promote(TimeSpan.Zero);
        Grant(1, 100);
        _lessor.OnPut("t2"u8.ToArray(), 0, 1);
        _lessor.OnPut("t1"u8.ToArray(), 0, 1);
        _time.Advance(TimeSpan.FromSeconds(10.5));

        var ttl = _lessor.TimeToLive(1, withKeys: true)!;
        ttl.TTL.Should().Be(89);
        ttl.GrantedTTL.Should().Be(100);
        ttl.Keys.Select(k => k.ToStringUtf8()).Should().Equal("t1", "t2");
        _lessor.TimeToLive(1, withKeys: false)!.Keys.Should().BeEmpty();
        _lessor.TimeToLive(2, withKeys: false).Should().BeNull();
    }

    [Fact]
    public async Task Following_leadership_promotes_at_once_so_a_keep_alive_after_an_election_is_answered()
    {
        Grant(1, 100);
        var beforeElection = () => _lessor.RenewAsync(1, CancellationToken.None);
        await beforeElection.Should().ThrowAsync<RpcException>().Where(e => e.Status.Detail == "etcdserver: not leader");

        _lessor.FollowLeadership(isLeader: true, TimeSpan.FromSeconds(1));
        _lessor.IsPrimary.Should().BeTrue();
        (await _lessor.RenewAsync(1, CancellationToken.None)).Should().Be(100);

        _lessor.FollowLeadership(isLeader: false, TimeSpan.FromSeconds(1));
        _lessor.IsPrimary.Should().BeFalse();
    }

    [Fact]
    public void Leases_are_listed_soonest_expiry_first()
    {
        _lessor.Promote(TimeSpan.Zero);
        Grant(1, 300);
        Grant(2, 100);
        Grant(3, 200);
        _lessor.Leases().Select(l => l.ID).Should().Equal(2L, 3L, 1L);
    }

    [Fact]
    public async Task Expiry_is_proposed_by_the_leader_once_per_retry_interval_and_never_applied_locally()
    {
        var proposer = new RecordingProposer();
        var leader = new SwitchableLeader();
        var loop = new LeaseExpiryLoop(_lessor, proposer, leader, _options, _time, new RootCredentials(), NullLogger<LeaseExpiryLoop>.Instance);
        Grant(1, 5);
        Grant(2, 60);

        loop.CheckOnce(default).Should().BeEmpty("the first check promotes: leases now run from now + TTL + extension");
        _lessor.IsPrimary.Should().BeTrue();
        _time.Advance(TimeSpan.FromSeconds(5.9));
        loop.CheckOnce(default).Should().BeEmpty();
        _time.Advance(TimeSpan.FromSeconds(0.2));
        loop.CheckOnce(default).Should().Equal(1L);
        await WaitForProposals(loop);
        proposer.Proposals.Should().ContainSingle().Which.LeaseRevoke.ID.Should().Be(1);
        proposer.Proposals[0].Header.Username.Should().Be("root", "the member revokes with root's rights, checked at apply like any revoke");
        _lessor.Exists(1).Should().BeTrue("only the applied revoke removes a lease");

        _time.Advance(TimeSpan.FromSeconds(1));
        loop.CheckOnce(default).Should().BeEmpty("a proposed revoke is not repeated before the retry interval");
        _time.Advance(TimeSpan.FromSeconds(2.5));
        loop.CheckOnce(default).Should().Equal(1L);

        leader.IsLeader = false;
        _time.Advance(TimeSpan.FromSeconds(100));
        loop.CheckOnce(default).Should().BeEmpty("a follower never expires leases");
        _lessor.IsPrimary.Should().BeFalse();
        await WaitForProposals(loop);
    }

    [Fact]
    public async Task Renew_extends_a_live_lease_and_reports_unknown_ones()
    {
        _lessor.Promote(TimeSpan.Zero);
        Grant(1, 10);
        _time.Advance(TimeSpan.FromSeconds(8));
        (await _lessor.RenewAsync(1, default)).Should().Be(10);
        _time.Advance(TimeSpan.FromSeconds(8));
        _lessor.TakeExpired(10).Should().BeEmpty();
        _lessor.TimeToLive(1, false)!.TTL.Should().Be(2);
        (await _lessor.RenewAsync(42, default)).Should().BeNull();
    }

    [Fact]
    public async Task Renewing_an_expired_lease_waits_for_its_revoke()
    {
        _lessor.Promote(TimeSpan.Zero);
        Grant(1, 10);
        _time.Advance(TimeSpan.FromSeconds(11));
        var renew = _lessor.RenewAsync(1, default);
        renew.IsCompleted.Should().BeFalse();
        _lessor.ApplyRevoke(new LeaseRevokeRequest { ID = 1 }, new FakeLeaseTxn(_revision, _meta));
        (await renew.WaitAsync(TimeSpan.FromSeconds(10))).Should().BeNull();
    }

    [Fact]
    public async Task Only_the_leader_renews()
    {
        Grant(1, 10);
        var act = () => _lessor.RenewAsync(1, default);
        await act.Should().ThrowAsync<RpcException>().Where(e => e.Status.Detail == "etcdserver: not leader");
    }

    [Fact]
    public void Recovery_rebuilds_leases_and_attachments_and_promotion_restarts_their_clocks()
    {
        Grant(1, 30);
        Grant(2, 40);
        using var recovered = NewLessor();
        recovered.Recover(new ListRecoverySource(_meta, ("x", 1), ("y", 1), ("z", 2), ("orphan", 99)));

        recovered.Count.Should().Be(2);
        recovered.TimeToLive(1, withKeys: true)!.Keys.Select(k => k.ToStringUtf8()).Should().Equal("x", "y");
        recovered.TimeToLive(2, withKeys: true)!.GrantedTTL.Should().Be(40);
        recovered.TakeExpired(10).Should().BeEmpty("not leader yet");

        recovered.Promote(TimeSpan.FromSeconds(1));
        recovered.TimeToLive(1, false)!.TTL.Should().Be(31, "30 s TTL + 1 s extension");
        _time.Advance(TimeSpan.FromSeconds(31.5));
        recovered.TakeExpired(10).Should().Equal(1L);
    }

    [Fact]
    public void Generated_ids_are_positive_unique_and_carry_the_member_id()
    {
        var ids = Enumerable.Range(0, 1000).Select(_ => _lessor.NewLeaseId()).ToList();
        ids.Should().OnlyHaveUniqueItems().And.OnlyContain(id => id > 0);
        ids.Should().OnlyContain(id => (id >> 48) == 0x1234);
    }

    private static async Task WaitForProposals(LeaseExpiryLoop loop)
    {
        // Proposals run asynchronously; the recording proposer completes them synchronously.
        while (loop.InFlight > 0)
        {
            await Task.Yield();
        }
    }

    private Lessor NewLessor() => new(_options, _time, NullLogger<Lessor>.Instance);

    private LeaseGrantResponse Grant(long id, long ttl) =>
        _lessor.ApplyGrant(new LeaseGrantRequest { ID = id, TTL = ttl }, new FakeLeaseTxn(_revision, _meta));
}
