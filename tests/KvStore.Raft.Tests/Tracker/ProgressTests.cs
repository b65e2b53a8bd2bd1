using KvStore.Raft.Tracker;

namespace KvStore.Raft.Tests.Tracker;

/// <summary>
/// The leader's view of one follower: the state machine probe → replicate → snapshot → probe, how acknowledgements
/// and rejections move Match and Next, and when sending pauses.
/// </summary>
public sealed class ProgressTests
{
    private static Progress InState(ProgressState state, ulong match, ulong next, ulong pendingSnapshot = 0)
    {
        var pr = new Progress(next, 256, false);
        switch (state)
        {
            case ProgressState.Replicate:
                pr.BecomeReplicate();
                break;
            case ProgressState.Snapshot:
                pr.BecomeSnapshot(pendingSnapshot);
                break;
            default:
                break;
        }

        pr.Match = match;
        pr.Next = next;
        return pr;
    }

    [Theory]
    [InlineData("Probe", false, false)]
    [InlineData("Probe", true, true)] // one probe at a time
    [InlineData("Replicate", false, false)]
    [InlineData("Replicate", true, true)] // the inflight window is full
    [InlineData("Snapshot", false, true)] // appends wait for the snapshot
    [InlineData("Snapshot", true, true)]
    public void Sending_pauses_per_state(string stateName, bool blocked, bool wantPaused)
    {
        var state = Enum.Parse<ProgressState>(stateName);
        var pr = InState(state, 0, 1);
        if (blocked)
        {
            if (state == ProgressState.Replicate)
            {
                for (ulong i = 1; i <= (ulong)pr.Inflights.Capacity; i++)
                {
                    pr.Inflights.Add(i);
                }
            }
            else
            {
                pr.ProbeSent = true;
            }
        }

        pr.IsPaused.Should().Be(wantPaused);
    }

    [Fact]
    public void A_rejection_or_an_acknowledgement_lets_a_probe_go_again()
    {
        var pr = InState(ProgressState.Probe, 0, 2);
        pr.ProbeSent = true;

        pr.MaybeDecrTo(1, 1).Should().BeTrue();
        pr.ProbeSent.Should().BeFalse();

        pr.ProbeSent = true;
        pr.MaybeUpdate(2).Should().BeTrue();
        pr.ProbeSent.Should().BeFalse();
        pr.IsPaused.Should().BeFalse();
    }

    [Theory]
    [InlineData("Replicate", 0UL, 2UL)]
    [InlineData("Snapshot", 10UL, 11UL)] // resume after the snapshot that was sent
    [InlineData("Snapshot", 0UL, 2UL)]
    public void Become_probe_restarts_right_after_what_the_follower_is_known_to_have(string from, ulong pendingSnapshot, ulong wantNext)
    {
        var pr = InState(Enum.Parse<ProgressState>(from), 1, 5, pendingSnapshot);
        pr.Inflights.Add(3);

        pr.BecomeProbe();

        pr.State.Should().Be(ProgressState.Probe);
        pr.Match.Should().Be(1);
        pr.Next.Should().Be(wantNext);
        pr.PendingSnapshot.Should().Be(0);
        pr.Inflights.Count.Should().Be(0);
    }

    [Fact]
    public void Become_replicate_sends_from_right_after_the_match()
    {
        var pr = InState(ProgressState.Probe, 1, 5);
        pr.ProbeSent = true;

        pr.BecomeReplicate();

        pr.State.Should().Be(ProgressState.Replicate);
        pr.Match.Should().Be(1);
        pr.Next.Should().Be(2);
        pr.ProbeSent.Should().BeFalse();
    }

    [Fact]
    public void Become_snapshot_records_the_pending_snapshot_and_clears_the_window()
    {
        var pr = InState(ProgressState.Replicate, 1, 5);
        pr.Inflights.Add(4);

        pr.BecomeSnapshot(10);

        pr.State.Should().Be(ProgressState.Snapshot);
        pr.Match.Should().Be(1);
        pr.PendingSnapshot.Should().Be(10);
        pr.Inflights.Count.Should().Be(0);
        pr.IsPaused.Should().BeTrue();
    }

    [Theory]
    [InlineData(2UL, 3UL, 5UL, false)] // an old acknowledgement moves nothing
    [InlineData(3UL, 3UL, 5UL, false)]
    [InlineData(4UL, 4UL, 5UL, true)] // Match moves; Next is already past it
    [InlineData(5UL, 5UL, 6UL, true)] // both move
    public void Maybe_update_never_moves_match_or_next_backwards(ulong acked, ulong wantMatch, ulong wantNext, bool wantUpdated)
    {
        var pr = InState(ProgressState.Probe, 3, 5);

        pr.MaybeUpdate(acked).Should().Be(wantUpdated);

        pr.Match.Should().Be(wantMatch);
        pr.Next.Should().Be(wantNext);
    }

    [Fact]
    public void Optimistic_update_moves_next_past_what_was_just_sent()
    {
        var pr = InState(ProgressState.Replicate, 3, 4);
        pr.OptimisticUpdate(9);
        pr.Next.Should().Be(10);
        pr.Match.Should().Be(3);
    }

    public static TheoryData<string, ulong, ulong, ulong, ulong, bool, ulong> DecrCases => new()
    {
        // state, match, next, rejected index, follower's hint, accepted, next after.

        // Replicate: a rejection at or below the match is stale; otherwise fall back to just after the match.
        { "Replicate", 5, 10, 5, 5, false, 10 },
        { "Replicate", 5, 10, 4, 4, false, 10 },
        { "Replicate", 5, 10, 9, 9, true, 6 },

        // Probe: only a rejection of the probe just sent (Next - 1) counts.
        { "Probe", 0, 0, 0, 0, false, 0 },
        { "Probe", 0, 10, 5, 5, false, 10 },
        { "Probe", 0, 10, 9, 9, true, 9 },
        { "Probe", 0, 2, 1, 1, true, 1 },
        { "Probe", 0, 1, 0, 0, true, 1 }, // Next never drops below 1
        { "Probe", 0, 10, 9, 2, true, 3 }, // jump to just after the follower's last index
        { "Probe", 0, 10, 9, 0, true, 1 },
        { "Probe", 3, 10, 9, 1, true, 4 }, // never below what the follower is known to have
    };

    [Theory]
    [MemberData(nameof(DecrCases))]
    public void Maybe_decr_to_backs_off_only_on_a_rejection_that_is_not_stale(
        string state, ulong match, ulong next, ulong rejected, ulong hint, bool wantAccepted, ulong wantNext)
    {
        var pr = InState(Enum.Parse<ProgressState>(state), match, next);

        pr.MaybeDecrTo(rejected, hint).Should().Be(wantAccepted);

        pr.Next.Should().Be(wantNext);
        pr.Match.Should().Be(match);
    }
}
