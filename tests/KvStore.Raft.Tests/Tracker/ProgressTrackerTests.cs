using KvStore.Raft.Quorum;
using KvStore.Raft.Tracker;

namespace KvStore.Raft.Tests.Tracker;

/// <summary>
/// Membership, per-member progress and vote counting. Membership changes one member at a time, so there is a
/// single majority (no joint configuration) and learners never count toward it.
/// </summary>
public sealed class ProgressTrackerTests
{
    private static ProgressTracker Tracker(ulong[] voters, ulong[]? learners = null)
    {
        var tracker = new ProgressTracker(16);
        tracker.Reset(new ConfState { Voters = voters, Learners = learners ?? [] }, 1);
        return tracker;
    }

    public static TheoryData<ulong[], ulong> CommittedCases => new()
    {
        { [5], 5 },
        { [5, 0], 0 },
        { [5, 3, 1], 3 },
        { [5, 5, 1], 5 },
        { [2, 9, 1, 9], 2 },
        { [1, 2, 3, 4, 5], 3 },
    };

    [Theory]
    [MemberData(nameof(CommittedCases))]
    public void Committed_is_the_largest_match_held_by_a_majority_of_voters(ulong[] matches, ulong want)
    {
        var ids = Enumerable.Range(1, matches.Length).Select(i => (ulong)i).ToArray();
        var tracker = Tracker(ids);
        foreach (var id in ids)
        {
            tracker.Progress[id].MaybeUpdate(matches[id - 1]);
        }

        tracker.Committed().Should().Be(want);
    }

    [Fact]
    public void Learners_never_count_toward_the_commit()
    {
        var tracker = Tracker([1, 2, 3], [4, 5]);
        tracker.Progress[1].MaybeUpdate(10);
        tracker.Progress[4].MaybeUpdate(10);
        tracker.Progress[5].MaybeUpdate(10);

        tracker.Committed().Should().Be(0);

        tracker.Progress[2].MaybeUpdate(7);
        tracker.Committed().Should().Be(7);
    }

    [Fact]
    public void With_no_voters_nothing_holds_the_commit_back()
    {
        new ProgressTracker(16).Committed().Should().Be(ulong.MaxValue);
    }

    [Theory]
    [InlineData(1, new ulong[] { 1 }, new ulong[] { }, "Won")] // a sole voter only needs itself
    [InlineData(3, new ulong[] { 1, 2 }, new ulong[] { }, "Won")]
    [InlineData(3, new ulong[] { 1 }, new ulong[] { 2 }, "Pending")]
    [InlineData(3, new ulong[] { 1 }, new ulong[] { 2, 3 }, "Lost")]
    [InlineData(3, new ulong[] { 1, 8, 9 }, new ulong[] { }, "Pending")] // learners' grants do not count
    [InlineData(4, new ulong[] { 1, 2 }, new ulong[] { 3 }, "Pending")]
    [InlineData(4, new ulong[] { 1 }, new ulong[] { 2, 3 }, "Lost")]
    public void Votes_are_tallied_among_voters_only(int voterCount, ulong[] granted, ulong[] rejected, string want)
    {
        var voters = Enumerable.Range(1, voterCount).Select(i => (ulong)i).ToArray();
        var tracker = Tracker(voters, [8, 9]);
        foreach (var id in granted)
        {
            tracker.RecordVote(id, true);
        }

        foreach (var id in rejected)
        {
            tracker.RecordVote(id, false);
        }

        tracker.TallyVotes().Should().Be(Enum.Parse<VoteResult>(want));
        tracker.VoteCounts().Should().Be((granted.Count(tracker.IsVoter), rejected.Length));
    }

    [Fact]
    public void The_first_vote_of_a_member_is_the_one_that_counts()
    {
        var tracker = Tracker([1, 2, 3]);
        tracker.RecordVote(1, true);
        tracker.RecordVote(2, false);
        tracker.RecordVote(2, true);

        tracker.VoteCounts().Should().Be((1, 1));
        tracker.TallyVotes().Should().Be(VoteResult.Pending);

        tracker.ResetVotes();
        tracker.VoteCounts().Should().Be((0, 0));
    }

    [Theory]
    [InlineData(new ulong[] { }, false)] // the leader alone is one of three
    [InlineData(new ulong[] { 2 }, true)]
    [InlineData(new ulong[] { 2, 3 }, true)]
    [InlineData(new ulong[] { 4, 5 }, false)] // learners are not a quorum
    public void Quorum_is_active_when_a_majority_of_voters_was_heard_counting_the_leader(ulong[] active, bool want)
    {
        var tracker = Tracker([1, 2, 3], [4, 5]);
        foreach (var pr in tracker.Progress.Values)
        {
            pr.RecentActive = false;
        }

        foreach (var id in active)
        {
            tracker.Progress[id].RecentActive = true;
        }

        tracker.QuorumActive(1).Should().Be(want);
    }

    [Fact]
    public void Adding_a_learner_as_voter_promotes_it_and_keeps_its_progress()
    {
        var tracker = Tracker([1, 2], [3]);
        tracker.Progress[3].MaybeUpdate(7);

        tracker.AddVoter(3, 100);

        tracker.IsVoter(3).Should().BeTrue();
        tracker.IsLearner(3).Should().BeFalse();
        tracker.Progress[3].IsLearner.Should().BeFalse();
        tracker.Progress[3].Match.Should().Be(7);
        tracker.ConfState().Voters.Should().Equal(1UL, 2UL, 3UL);
        tracker.ConfState().Learners.Should().BeEmpty();
    }

    [Fact]
    public void Removing_a_member_forgets_its_role_and_progress()
    {
        var tracker = Tracker([1, 2, 3], [4]);

        tracker.Remove(2);
        tracker.Remove(4);

        tracker.Voters.Should().Equal(1UL, 3UL);
        tracker.Learners.Should().BeEmpty();
        tracker.Progress.Keys.Should().Equal(1UL, 3UL);
    }

    [Fact]
    public void A_new_term_resets_followers_and_keeps_what_the_leader_persisted()
    {
        var tracker = Tracker([1, 2, 3], [4]);
        tracker.Progress[2].MaybeUpdate(5);
        tracker.Progress[2].BecomeReplicate();

        tracker.ResetProgress(lastIndex: 10, selfStableIndex: 9, self: 1);

        tracker.Progress[1].Match.Should().Be(9);
        tracker.Progress[1].RecentActive.Should().BeTrue();
        foreach (var id in new ulong[] { 2, 3, 4 })
        {
            tracker.Progress[id].Match.Should().Be(0);
            tracker.Progress[id].Next.Should().Be(11);
            tracker.Progress[id].State.Should().Be(ProgressState.Probe);
        }

        tracker.Progress[4].IsLearner.Should().BeTrue();
        tracker.Progress[2].IsLearner.Should().BeFalse();
    }
}
