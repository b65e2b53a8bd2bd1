using KvStore.Raft.Tests.Simulation;

namespace KvStore.Raft.Tests;

/// <summary>
/// <see cref="RaftNode.AdvanceTicks"/>: the host's start-up fast-forward of the election timer (etcd's advanceTicks).
/// Every expectation holds for any seed: the randomized election timeout is drawn from [ElectionTick, 2*ElectionTick).
/// </summary>
public sealed class TickAdvanceTests
{
    private const int ElectionTick = 10;

    public static TheoryData<ulong> Seeds => [.. Enumerable.Range(1, 25).Select(s => (ulong)s)];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Advancing_has_exactly_the_effect_of_as_many_ticks(ulong seed)
    {
        var advanced = Started(3, seed);
        var ticked = Started(3, seed);

        advanced.Node(1).AdvanceTicks(ElectionTick + 3);
        for (var i = 0; i < ElectionTick + 3; i++)
        {
            ticked.Node(1).Tick();
        }

        var a = advanced.Node(1);
        var t = ticked.Node(1);
        (a.Role, a.Term, a.HasReady()).Should().Be((t.Role, t.Term, t.HasReady()));
        a.GetReady().Messages.Select(m => (m.Type, m.To, m.Term)).Should().Equal(t.GetReady().Messages.Select(m => (m.Type, m.To, m.Term)));
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void A_sole_voter_advanced_by_election_tick_minus_one_leads_within_one_election_tick(ulong seed)
    {
        var c = Started(1, seed);
        c.Node(1).AdvanceTicks(ElectionTick - 1);
        c.Stabilize();
        c.Node(1).Role.Should().Be(RaftRole.Follower, "the advance alone never reaches the smallest election timeout");

        TicksUntilLeader(c, 1).Should().BeInRange(1, ElectionTick);
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Without_an_advance_a_sole_voter_waits_out_a_whole_election_timeout(ulong seed)
    {
        TicksUntilLeader(Started(1, seed), 1).Should().BeInRange(ElectionTick, (2 * ElectionTick) - 1);
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Members_advanced_by_election_tick_minus_two_elect_a_leader_sooner(ulong seed)
    {
        var advanced = Started(3, seed);
        foreach (var id in advanced.InitialIds)
        {
            advanced.Node(id).AdvanceTicks(ElectionTick - 2);
        }

        // Two ticks at least are left for a leader's first heartbeat to arrive before anyone campaigns.
        var withAdvance = TicksUntilAnyLeader(advanced);
        withAdvance.Should().BeInRange(2, ElectionTick + 1);

        var plain = TicksUntilAnyLeader(Started(3, seed));
        plain.Should().BeInRange(ElectionTick, (2 * ElectionTick) - 1);
        withAdvance.Should().Be(plain - (ElectionTick - 2), "the advance moves the same election earlier by exactly the ticks advanced");
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void An_advance_on_a_follower_of_a_live_leader_starts_no_election(ulong seed)
    {
        var c = Started(3, seed);
        c.Elect(1);
        var term = c.Node(1).Term;

        // A member that restarts while the others have a leader: the leader's heartbeat resets its timer before the
        // two remaining ticks run out.
        c.Node(2).AdvanceTicks(ElectionTick - 2);
        c.Run(3 * ElectionTick);

        c.Node(1).Role.Should().Be(RaftRole.Leader);
        c.Node(2).Term.Should().Be(term);
        c.Node(2).Leader.Should().Be(1);
    }

    [Fact]
    public void A_negative_advance_is_refused()
    {
        var c = Started(1, 1);
        var act = () => c.Node(1).AdvanceTicks(-1);
        act.Should().Throw<ArgumentOutOfRangeException>();
    }

    private static SimCluster Started(int size, ulong seed) =>
        ClusterTestExtensions.Started(size, new SimOptions { ElectionTick = ElectionTick, Seed = seed });

    private static int TicksUntilLeader(SimCluster c, ulong id)
    {
        for (var ticks = 1; ticks <= 4 * ElectionTick; ticks++)
        {
            c.Run(1);
            if (c.Node(id).Role == RaftRole.Leader)
            {
                return ticks;
            }
        }

        throw new InvalidOperationException("no leader");
    }

    private static int TicksUntilAnyLeader(SimCluster c)
    {
        for (var ticks = 1; ticks <= 4 * ElectionTick; ticks++)
        {
            c.Run(1);
            if (c.Leader() is not null)
            {
                return ticks;
            }
        }

        throw new InvalidOperationException("no leader");
    }
}
