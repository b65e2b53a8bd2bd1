using Etcdserverpb;
using KvStore.Server.Lease;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Lease;

/// <summary>
/// Lease checkpointing (etcd 3.4's --experimental-enable-lease-checkpoint): the leader proposes remaining TTLs every
/// interval; applied checkpoints are persisted and a new leader resumes from them, extended by one election timeout.
/// </summary>
public sealed class LeaseCheckpointTests : IDisposable
{
    private readonly ManualTimeProvider _time = new();
    private readonly Dictionary<string, byte[]> _meta = [];
    private readonly LessorOptions _options;
    private readonly Lessor _lessor;

    public LeaseCheckpointTests()
    {
        _options = LessorOptions.FromTiming(100, 1000, memberId: 0x1234);
        _options.CheckpointEnabled = true;
        _options.CheckpointInterval = TimeSpan.FromSeconds(10);
        _lessor = new Lessor(_options, _time, NullLogger<Lessor>.Instance);
    }

    public void Dispose() => _lessor.Dispose();

    [Fact]
    public async Task The_leader_proposes_remaining_ttls_each_interval_and_a_new_leader_resumes_from_them()
    {
        var proposer = new RecordingProposer();
        var loop = new LeaseExpiryLoop(_lessor, proposer, new SwitchableLeader(), _options, _time, new RootCredentials(), NullLogger<LeaseExpiryLoop>.Instance);
        loop.CheckOnce(default);
        Grant(1, 100);
        Grant(2, 8); // shorter than one interval: never checkpointed (etcd)

        _time.Advance(TimeSpan.FromSeconds(9.5));
        loop.CheckOnce(default);
        Checkpoints().Should().BeEmpty("nothing is due before the interval");

        _time.Advance(TimeSpan.FromSeconds(1));
        loop.CheckOnce(default);
        await Until(() => Checkpoints().Count == 1);
        var checkpoint = Checkpoints().Single();
        checkpoint.Checkpoints.Should().ContainSingle().Which.Should().Be(new LeaseCheckpoint { ID = 1, RemainingTTL = 90 }, "ceil(100 - 10.5)");

        _time.Advance(TimeSpan.FromSeconds(20));
        loop.CheckOnce(default);
        Checkpoints().Should().HaveCount(1, "the next checkpoint is scheduled when this one applies");

        List<LeaseCheckpointRequest> Checkpoints()
        {
            lock (proposer.Proposals)
            {
                return [.. proposer.Proposals.Where(p => p.LeaseCheckpoint is not null).Select(p => p.LeaseCheckpoint)];
            }
        }

        // Applied on every member and persisted with the lease record.
        _lessor.ApplyCheckpoint(checkpoint, new FakeLeaseTxn(1, _meta));
        Lessor.DecodeRecord(Lessor.EncodeKey(1), _meta["lease/0000000000000001"]).Should().Be((1L, 100L, 90L));

        // A member that recovers from the store and becomes leader starts the lease at 90 s + one election timeout.
        using var successor = new Lessor(_options, _time, NullLogger<Lessor>.Instance);
        successor.Recover(new ListRecoverySource(_meta));
        successor.TimeToLive(1, false)!.TTL.Should().Be(90, "a follower reports the checkpointed TTL");
        successor.Promote(_options.PromoteExtension);
        successor.TimeToLive(1, false)!.TTL.Should().Be(91);
    }

    [Fact]
    public async Task A_renewal_clears_the_checkpoint_through_a_proposal_not_locally()
    {
        _lessor.Promote(TimeSpan.Zero);
        Grant(1, 100);
        _lessor.ApplyCheckpoint(Checkpoint(1, 40), new FakeLeaseTxn(1, _meta));
        _lessor.HasCheckpoint(1).Should().BeTrue();

        (await _lessor.RenewAsync(1, default)).Should().Be(100);
        _lessor.HasCheckpoint(1).Should().BeTrue("replicated state changes only when the clearing checkpoint applies");
        _lessor.ApplyCheckpoint(Checkpoint(1, 0), new FakeLeaseTxn(1, _meta));
        _lessor.HasCheckpoint(1).Should().BeFalse();
        Lessor.DecodeRecord(Lessor.EncodeKey(1), _meta["lease/0000000000000001"]).Should().Be((1L, 100L, 0L));
    }

    [Fact]
    public async Task Frequent_renewals_do_not_postpone_a_scheduled_checkpoint_and_followers_schedule_nothing()
    {
        Grant(1, 100);
        _lessor.TakeDueCheckpoints().Should().BeNull("a follower never checkpoints");
        _lessor.Promote(TimeSpan.Zero);
        for (var i = 0; i < 3; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(3));
            (await _lessor.RenewAsync(1, default)).Should().Be(100);
        }

        _time.Advance(TimeSpan.FromSeconds(2));
        _lessor.TakeDueCheckpoints()!.Checkpoints.Should().ContainSingle().Which.RemainingTTL.Should().Be(98, "due 10 s after promotion, renewed 2 s ago");
    }

    private static LeaseCheckpointRequest Checkpoint(long id, long remaining)
    {
        var request = new LeaseCheckpointRequest();
        request.Checkpoints.Add(new LeaseCheckpoint { ID = id, RemainingTTL = remaining });
        return request;
    }

    private void Grant(long id, long ttl) => _lessor.ApplyGrant(new LeaseGrantRequest { ID = id, TTL = ttl }, new FakeLeaseTxn(1, _meta));

    private static async Task Until(Func<bool> condition)
    {
        // Proposals are started without waiting; the recording proposer completes them synchronously.
        for (var i = 0; i < 1000 && !condition(); i++)
        {
            await Task.Yield();
        }

        condition().Should().BeTrue();
    }
}
