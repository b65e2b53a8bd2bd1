using KvStore.Raft.Tests.Simulation;

namespace KvStore.Raft.Tests;

/// <summary>Subtle scenarios from the Raft paper (Ongaro and Ousterhout, 2014) and the thesis, scripted step by step.</summary>
public sealed class RaftPaperTests
{
    /// <summary>
    /// Figure 8: a leader must not commit an entry of an earlier term by counting replicas. Five members; the log
    /// index that matters is 6 (indexes 1-5 are the bootstrap membership entries at term 1).
    /// (a) S1 leads term 2 and its entry 6/2 reaches only S2. (b) S1 crashes; S5 wins term 3 with S3 and S4 and
    /// appends 6/3 locally. (c) S5 crashes; S1 wins term 4 and copies 6/2 to S3 but not its own 7/4 (which reaches S2 only):
    /// 6/2 is now on a majority. Counting it as committed (the unsafe knob) lets S1 apply it. (d) S1 crashes; S5 wins term 5 and
    /// overwrites index 6 with 6/3 everywhere — a committed entry lost, which the checker must catch.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Figure_8_is_safe_only_with_the_current_term_commit_rule(bool disableRule)
    {
        var c = ClusterTestExtensions.Started(5, new SimOptions { PreVote = false, CheckQuorum = false, MaxSizePerMsg = 1, DisableCurrentTermCommitRule = disableRule });

        // (a)
        c.Elect(1, drop: m => m.Type == MessageType.App && m.From == 1 && m.To is 3 or 4 or 5);
        c.Node(1).Role.Should().Be(RaftRole.Leader);
        c.Node(1).Term.Should().Be(2);
        c.Node(2).TermAt(6).Should().Be(2);
        c.Node(3).LastIndex.Should().Be(5);

        // (b)
        c.Crash(1);
        c.InFlight.Clear();
        c.Elect(5, drop: m => m.Type == MessageType.App && m.From == 5);
        c.Node(5).Role.Should().Be(RaftRole.Leader);
        c.Node(5).Term.Should().Be(3);
        c.Node(5).TermAt(6).Should().Be(3);

        // (c)
        c.Crash(5);
        c.InFlight.Clear();
        c.Restart(1);
        c.Stabilize(); // re-apply the membership entries before campaigning
        c.Elect(1);
        c.Node(1).Role.Should().NotBe(RaftRole.Leader, "S3 and S4 voted for S5 in term 3");
        c.Elect(1, drop: m => m.From == 1 && (
            (m.Type == MessageType.App && (m.To == 4 || (m.To == 3 && m.Index >= 6 && c.Node(3).LastIndex >= 6))) ||
            (m.Type is MessageType.App or MessageType.Heartbeat && m.Commit >= 6)));
        c.Node(1).Role.Should().Be(RaftRole.Leader);
        c.Node(1).Term.Should().Be(4);
        c.Node(3).TermAt(6).Should().Be(2, "S1 copied its term-2 entry to S3");
        c.Node(3).LastIndex.Should().Be(6, "but not its term-4 entry");
        c.Node(2).TermAt(7).Should().Be(4);
        c.Node(1).CommitIndex.Should().Be(disableRule ? 6UL : 5UL);

        // (d)
        c.Crash(1);
        c.InFlight.Clear();
        c.Restart(5);
        c.Stabilize();
        c.Elect(5);
        c.Elect(5);
        c.Node(5).Role.Should().Be(RaftRole.Leader);
        c.Run(10);

        if (disableRule)
        {
            c.Checker.Violations.Should().Contain(v => v.StartsWith("State Machine Safety", StringComparison.Ordinal));
        }
        else
        {
            c.Checker.Violations.Should().BeEmpty();
            foreach (var id in new ulong[] { 2, 3, 4, 5 })
            {
                c.Node(id).TermAt(6).Should().Be(3);
                c.Members[id].SmApplied.Should().BeGreaterThanOrEqualTo(7);
            }
        }
    }

    [Fact]
    public void Partitioned_old_leader_with_a_stale_term_cannot_commit_and_yields_on_heal()
    {
        var c = ClusterTestExtensions.Started(5, new SimOptions { CheckQuorum = false });
        c.Elect(1);
        c.ProposeAndSettle(1).Should().Be(RequestResult.Accepted);
        var committedBefore = c.Node(1).CommitIndex;

        c.Isolate(1);
        c.Elect(2);
        c.Node(2).Role.Should().Be(RaftRole.Leader);
        c.Node(1).Role.Should().Be(RaftRole.Leader, "the old leader has not heard of the new term");
        c.Node(1).Term.Should().BeLessThan(c.Node(2).Term);

        c.Propose(1, out _).Should().Be(RequestResult.Accepted);
        var staleIndex = c.Node(1).LastIndex;
        c.Run(20);
        c.Node(1).CommitIndex.Should().Be(committedBefore, "a minority leader never commits");
        c.ProposeAndSettle(2).Should().Be(RequestResult.Accepted);

        c.Heal();
        c.Run(5);
        c.Node(1).Role.Should().Be(RaftRole.Follower);
        c.Node(1).Leader.Should().Be(2);
        c.Node(1).TermAt(staleIndex).Should().Be(c.Node(2).TermAt(staleIndex), "the stale entry was overwritten");
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void Leader_with_check_quorum_steps_down_when_it_loses_the_quorum()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { CheckQuorum = true, ElectionTick = 5 });
        c.Elect(1);
        c.Isolate(1);
        c.Run(12);
        c.Node(1).Role.Should().NotBe(RaftRole.Leader);
        c.Checker.Violations.Should().BeEmpty();
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Rejoining_member_disrupts_the_leader_only_without_pre_vote(bool preVote, bool expectDisruption)
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { PreVote = preVote, CheckQuorum = true, ElectionTick = 5 });
        c.Elect(1);
        var term = c.Node(1).Term;

        c.Isolate(3);
        for (var i = 0; i < 3; i++)
        {
            c.ProposeAndSettle(1).Should().Be(RequestResult.Accepted);
        }

        c.Run(40);
        if (preVote)
        {
            c.Node(3).Term.Should().Be(term, "pre-votes never bump the term");
        }
        else
        {
            c.Node(3).Term.Should().BeGreaterThan(term);
        }

        c.Heal();
        c.Run(30);
        var leader = c.Leader()!.Value;
        var disrupted = c.Node(leader).Term != term;
        disrupted.Should().Be(expectDisruption);
        c.Node(3).CommitIndex.Should().Be(c.Node(leader).CommitIndex);
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void Follower_with_a_live_leader_ignores_vote_requests()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { PreVote = false, CheckQuorum = true, ElectionTick = 10 });
        c.Elect(1);
        var term = c.Node(1).Term;
        c.Node(2).Step(new Message { Type = MessageType.Vote, From = 3, To = 2, Term = term + 1, Index = 100, LogTerm = term });
        c.Node(2).Term.Should().Be(term);
        c.Node(2).Leader.Should().Be(1);
    }
}
