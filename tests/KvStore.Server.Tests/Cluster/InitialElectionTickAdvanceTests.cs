using Xunit;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// --initial-election-tick-advance on a fresh three-member cluster, counted in the hosts' ticks (20 ms each here, an
/// election timeout of 250 ticks, long beside the time the members take to connect even on a loaded machine): with it,
/// every member fast-forwards its election timer by 248 ticks once it has streams to both peers and the first leader
/// follows within one election timeout of that; without it, no member can campaign before its timer has counted a
/// whole election timeout from start.
/// </summary>
public sealed class InitialElectionTickAdvanceTests
{
    private const long HeartbeatMs = 20; // the harness's --heartbeat-interval
    private const long ElectionTimeoutMs = 5000;
    private const int ElectionTick = (int)(ElectionTimeoutMs / HeartbeatMs);

    [Fact]
    public async Task With_the_advance_the_first_leader_is_elected_soon_after_the_peers_connect()
    {
        await using var cluster = await StartAsync(advance: true);
        var leader = await FirstLeaderAsync(cluster);

        // The leader cannot have campaigned on its own timer before the advance (that takes 250 ticks; its peers
        // connect within a few dozen), and after it at most (randomized timeout - 248) ticks remained: at most 251,
        // fewer than 250 unless all three members drew one of the two longest timeouts, and none when the ticks
        // counted before the advance already make up the rest (it then campaigns at the advance itself, as etcd's).
        leader.Host.TicksAdvanced.Should().Be(ElectionTick - 2);
        leader.Host.TicksAtAdvance.Should().BeGreaterThanOrEqualTo(0);
        (leader.Host.TicksAtFirstLeader - leader.Host.TicksAtAdvance).Should().BeInRange(0, ElectionTick - 1);
    }

    [Fact]
    public async Task Without_the_advance_no_leader_is_elected_before_a_whole_election_timeout()
    {
        await using var cluster = await StartAsync(advance: false);
        var leader = await FirstLeaderAsync(cluster);

        foreach (var member in cluster.Members)
        {
            member.Host.TicksAdvanced.Should().Be(0);
            member.Host.TicksAtAdvance.Should().Be(-1);
        }

        leader.Host.TicksAtFirstLeader.Should().BeGreaterThanOrEqualTo(ElectionTick);
    }

    private static async Task<ClusterMemberHost> FirstLeaderAsync(TestCluster cluster)
    {
        var leader = await cluster.WaitForLeaderAsync();
        await Bounded.UntilAsync(() => leader.Host.TicksAtFirstLeader >= 0, "the leader to record its election", leader);
        return leader;
    }

    private static Task<TestCluster> StartAsync(bool advance) =>
        TestCluster.StartAsync(3, electionTimeoutMs: ElectionTimeoutMs, initialElectionTickAdvance: advance);
}
