using KvStore.Raft.Tests.Simulation;

namespace KvStore.Raft.Tests;

/// <summary>Membership, transfer, snapshots, reads and proposals, scripted on a small cluster.</summary>
public sealed class ScenarioTests
{
    private static SimCluster WithLearner()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { Spares = 1 });
        c.Elect(1);
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.AddLearnerNode, NodeId = 4 }).Should().Be(RequestResult.Accepted);
        c.Stabilize();
        c.Node(1).ConfState.Learners.Should().Equal(4UL);
        return c;
    }

    [Fact]
    public void Learner_receives_the_log_but_is_never_counted_and_never_campaigns()
    {
        var c = WithLearner();
        c.ProposeAndSettle(1);
        c.Members[4].SmApplied.Should().Be(c.Members[1].SmApplied, "a learner replicates the log");

        // Leader + learner are not a quorum of three voters.
        c.Partition([1, 4]);
        var commit = c.Node(1).CommitIndex;
        c.Propose(1, out _).Should().Be(RequestResult.Accepted);
        c.Stabilize();
        c.Node(1).CommitIndex.Should().Be(commit);
        c.Node(1).MatchOf(4).Should().Be(c.Node(1).LastIndex);

        // A learner cut off from everyone never campaigns.
        c.Heal();
        c.Isolate(4);
        var term = c.Node(4).Term;
        c.Run(50);
        c.Node(4).Term.Should().Be(term);
        c.Node(4).Role.Should().Be(RaftRole.Follower);
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void Promoted_learner_counts_toward_the_quorum()
    {
        var c = WithLearner();
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.AddNode, NodeId = 4 }).Should().Be(RequestResult.Accepted);
        c.Stabilize();
        c.Node(1).ConfState.Voters.Should().Equal(1UL, 2UL, 3UL, 4UL);
        c.Node(4).IsPromotable.Should().BeTrue();

        // With four voters, leader + one other is not enough, leader + two is.
        c.Partition([1, 4]);
        var commit = c.Node(1).CommitIndex;
        c.ProposeAndSettle(1);
        c.Node(1).CommitIndex.Should().Be(commit);
        c.Heal();
        c.Isolate(3);
        c.Run(3);
        c.Node(1).CommitIndex.Should().BeGreaterThan(commit);
    }

    [Fact]
    public void Only_one_conf_change_may_be_pending()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { Spares = 2 });
        c.Elect(1);
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.AddLearnerNode, NodeId = 4 }).Should().Be(RequestResult.Accepted);
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.AddLearnerNode, NodeId = 5 }).Should().Be(RequestResult.ConfChangePending);
        c.Stabilize();
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.AddLearnerNode, NodeId = 5 }).Should().Be(RequestResult.Accepted);
    }

    [Theory]
    [InlineData(ConfChangeType.AddNode, 2UL)]
    [InlineData(ConfChangeType.AddLearnerNode, 3UL)]
    [InlineData(ConfChangeType.RemoveNode, 9UL)]
    [InlineData(ConfChangeType.AddNode, 0UL)]
    public void Invalid_conf_changes_are_refused(ConfChangeType type, ulong node)
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1);
        c.Stabilize();
        c.Node(1).ProposeConfChange(new ConfChange { Type = type, NodeId = node }).Should().Be(RequestResult.InvalidConfChange);
    }

    [Fact]
    public void Removing_the_current_leader_lets_the_others_elect_a_new_one()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1);
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.RemoveNode, NodeId = 1 }).Should().Be(RequestResult.Accepted);
        c.Stabilize();
        c.Node(1).Role.Should().Be(RaftRole.Follower, "a removed leader steps down once it applies its removal");
        c.Node(2).ConfState.Voters.Should().Equal(2UL, 3UL);

        c.Run(40);
        var leader = c.Leader();
        leader.Should().BeOneOf(2UL, 3UL);
        c.ProposeAndSettle(leader!.Value).Should().Be(RequestResult.Accepted);
        c.Node(2).CommitIndex.Should().Be(c.Node(3).CommitIndex);
        c.Node(1).IsPromotable.Should().BeFalse();
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void Transfer_to_a_lagging_member_catches_it_up_first()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { ElectionTick = 10 });
        c.Elect(1);
        c.Isolate(3);
        for (var i = 0; i < 5; i++)
        {
            c.ProposeAndSettle(1);
        }

        c.Node(3).LastIndex.Should().BeLessThan(c.Node(1).LastIndex);
        c.Heal();
        c.Node(1).TransferLeadership(3).Should().Be(RequestResult.Accepted);
        c.Node(1).LeadTransferee.Should().Be(3);
        c.Propose(1, out _).Should().Be(RequestResult.LeaderTransferInProgress, "proposals are dropped during a transfer");
        c.Stabilize();
        c.Node(3).Role.Should().Be(RaftRole.Follower, "the probe to 3 is paused until a heartbeat answer");
        c.Run(3);

        c.Node(3).Role.Should().Be(RaftRole.Leader);
        c.Node(1).Leader.Should().Be(3);
        c.ProposeAndSettle(1).Should().Be(RequestResult.Forwarded);
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void Transfer_to_an_unreachable_member_is_abandoned_after_an_election_timeout()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { ElectionTick = 10, CheckQuorum = false });
        c.Elect(1);
        c.Isolate(3);
        c.Node(1).TransferLeadership(3).Should().Be(RequestResult.Accepted);
        c.Run(10);
        c.Node(1).LeadTransferee.Should().Be(0);
        c.Node(1).Role.Should().Be(RaftRole.Leader);
        c.Propose(1, out _).Should().Be(RequestResult.Accepted);
    }

    [Fact]
    public void Transfer_request_on_a_follower_is_forwarded_to_the_leader()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1);
        c.Node(2).TransferLeadership(2).Should().Be(RequestResult.Forwarded);
        c.Stabilize();
        c.Node(2).Role.Should().Be(RaftRole.Leader);
    }

    [Fact]
    public void Follower_far_behind_the_compacted_log_gets_a_snapshot()
    {
        var c = ClusterTestExtensions.Started(3, new SimOptions { MaxSizePerMsg = 64 });
        c.Elect(1);
        c.Isolate(3);
        for (var i = 0; i < 20; i++)
        {
            c.ProposeAndSettle(1);
        }

        c.Compact(1);
        c.Compact(2);
        c.Members[1].Storage.FirstIndex().Should().BeGreaterThan(c.Node(3).LastIndex + 1);

        c.Heal();
        c.Run(3);
        c.Members[3].Storage.Snapshot(out var snap);
        snap.IsEmpty.Should().BeFalse("the follower could only catch up from a snapshot");
        c.Members[3].SmApplied.Should().Be(c.Members[1].SmApplied);
        c.Members[3].SmChain.Should().Be(c.Members[1].SmChain);
        c.Node(3).ConfState.Voters.Should().Equal(1UL, 2UL, 3UL);
        c.ProposeAndSettle(1);
        c.Members[3].SmApplied.Should().Be(c.Members[1].SmApplied);
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void ReadIndex_on_the_leader_confirms_leadership_before_releasing()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1);
        c.ProposeAndSettle(1);
        c.Isolate(1);
        c.ReadIndex(1, out var ctx).Should().Be(RequestResult.Accepted);
        c.Stabilize();
        c.Reads.Should().BeEmpty("a leader cut off from the quorum cannot confirm it still leads");

        c.Heal();
        c.Run(1);
        c.Reads.Should().ContainSingle();
        c.Reads[0].Member.Should().Be(1);
        c.Reads[0].State.Context.ToArray().Should().Equal(ctx);
        c.Reads[0].State.Index.Should().Be(c.Node(1).CommitIndex);
        c.Checker.Violations.Should().BeEmpty();
    }

    [Fact]
    public void ReadIndex_on_a_follower_is_answered_by_the_leader()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1);
        c.ProposeAndSettle(2);
        c.ReadIndex(2, out var ctx).Should().Be(RequestResult.Forwarded);
        c.Stabilize();
        c.Reads.Should().ContainSingle();
        c.Reads[0].Member.Should().Be(2);
        c.Reads[0].State.Context.ToArray().Should().Equal(ctx);
        c.Reads[0].State.Index.Should().Be(c.Node(1).CommitIndex);
    }

    [Fact]
    public void ReadIndex_waits_until_the_new_leader_commits_in_its_term()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1, drop: m => m.Type == MessageType.AppResp);
        c.Node(1).Role.Should().Be(RaftRole.Leader);
        c.ReadIndex(1, out _).Should().Be(RequestResult.Accepted);
        c.Stabilize(drop: m => m.Type == MessageType.AppResp);
        c.Reads.Should().BeEmpty();
        c.Stabilize();
        c.Run(1);
        c.Reads.Should().ContainSingle();
    }

    [Fact]
    public void Proposal_on_a_follower_is_forwarded_and_committed()
    {
        var c = ClusterTestExtensions.Started(5);
        c.Elect(1);
        c.ProposeAndSettle(4).Should().Be(RequestResult.Forwarded);
        foreach (var m in c.Members.Values)
        {
            m.SmApplied.Should().Be(c.Node(1).LastIndex);
        }
    }

    [Fact]
    public void Requests_without_a_leader_fail_with_no_leader()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Propose(1, out _).Should().Be(RequestResult.NoLeader);
        c.ReadIndex(2).Should().Be(RequestResult.NoLeader);
        c.Node(3).TransferLeadership(1).Should().Be(RequestResult.NoLeader);
        c.Node(1).ProposeConfChange(new ConfChange { Type = ConfChangeType.RemoveNode, NodeId = 3 }).Should().Be(RequestResult.NoLeader);
    }

    [Fact]
    public void Crashed_member_restarts_from_what_it_persisted()
    {
        var c = ClusterTestExtensions.Started(3);
        c.Elect(1);
        for (var i = 0; i < 3; i++)
        {
            c.ProposeAndSettle(1);
        }

        var applied = c.Members[2].SmApplied;
        c.Crash(2);
        c.Restart(2);
        c.Node(2).CommitIndex.Should().Be(applied);
        c.Stabilize();
        c.Members[2].SmApplied.Should().Be(applied, "committed entries are applied again after a restart");
        c.Checker.Violations.Should().BeEmpty();
    }
}
