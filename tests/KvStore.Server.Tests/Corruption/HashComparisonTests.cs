using KvStore.Server.Corruption;

namespace KvStore.Server.Tests.Corruption;

public sealed class HashComparisonTests
{
    private static readonly MemberHash Leader = new(1, Revision: 100, CompactRevision: 40, Hash: 0xAAAA);

    [Fact]
    public void Followers_with_the_same_hash_at_the_same_compaction_are_consistent() =>
        HashComparison.Periodic(Leader, 100, 40, [new MemberHash(2, 100, 40, 0xAAAA), new MemberHash(3, 90, 40, 0xAAAA)])
            .Should().BeEmpty();

    [Fact]
    public void A_different_hash_at_the_same_compaction_names_the_member_the_revision_and_both_hashes()
    {
        var mismatches = HashComparison.Periodic(Leader, 100, 40, [new MemberHash(2, 100, 40, 0xAAAA), new MemberHash(3, 100, 40, 0xBBBB)]);

        mismatches.Should().ContainSingle().Which.Should().BeEquivalentTo(
            new HashMismatch(3, 100, 0xAAAA, 0xBBBB, "same compact revision, different hashes"));
    }

    [Fact]
    public void A_different_hash_after_an_older_compaction_is_not_comparable() =>
        HashComparison.Periodic(Leader, 100, 40, [new MemberHash(2, 100, 20, 0xBBBB)]).Should().BeEmpty();

    [Fact]
    public void A_follower_ahead_of_the_leaders_revision_is_inconsistent()
    {
        var mismatch = HashComparison.Periodic(Leader, 105, 40, [new MemberHash(2, 106, 40, 0xAAAA)]).Should().ContainSingle().Subject;

        mismatch.MemberId.Should().Be(2);
        mismatch.Reason.Should().Be("member's revision 106 is ahead of the leader's 105");
    }

    [Fact]
    public void A_follower_that_compacted_further_than_the_leader_is_inconsistent()
    {
        var mismatch = HashComparison.Periodic(Leader, 100, 40, [new MemberHash(2, 100, 50, 0xBBBB)]).Should().ContainSingle().Subject;

        mismatch.MemberId.Should().Be(2);
        mismatch.Reason.Should().Be("member's compact revision 50 is ahead of the leader's 40");
    }

    [Fact]
    public void The_leaders_revision_after_the_answers_is_what_followers_are_measured_against() =>
        // Writes applied while the followers answered move the leader ahead too: not a mismatch.
        HashComparison.Periodic(Leader, 120, 40, [new MemberHash(2, 115, 40, 0xAAAA)]).Should().BeEmpty();

    [Fact]
    public void No_answers_no_mismatches() =>
        HashComparison.Periodic(Leader, 100, 40, []).Should().BeEmpty();

    [Fact]
    public void Initial_check_reports_a_peer_hashing_this_members_revision_differently_at_the_same_compaction()
    {
        var mismatches = HashComparison.Initial(Leader, [new MemberHash(2, 130, 40, 0xAAAA), new MemberHash(3, 130, 40, 0xCCCC), new MemberHash(4, 130, 60, 0xDDDD)]);

        mismatches.Should().ContainSingle().Which.Should().BeEquivalentTo(
            new HashMismatch(3, 100, 0xAAAA, 0xCCCC, "same compact revision, different hashes"));
    }

    [Fact]
    public void Initial_check_passes_when_every_answer_matches() =>
        HashComparison.Initial(Leader, [new MemberHash(2, 130, 40, 0xAAAA)]).Should().BeEmpty();

    [Fact]
    public void A_leader_whose_own_hash_changes_at_the_same_revision_names_itself_with_both_hashes() =>
        HashComparison.LeaderSelf(Leader, Leader with { Hash = 0xEEEE }).Should().BeEquivalentTo(
            new HashMismatch(1, 100, 0xAAAA, 0xEEEE, "the leader's own hash changed at the same revision"));

    [Fact]
    public void A_leader_hash_that_changed_with_a_write_or_a_compaction_in_between_is_not_compared()
    {
        HashComparison.LeaderSelf(Leader, Leader).Should().BeNull();
        HashComparison.LeaderSelf(Leader, Leader with { Revision = 101, Hash = 0xEEEE }).Should().BeNull();
        HashComparison.LeaderSelf(Leader, Leader with { CompactRevision = 60, Hash = 0xEEEE }).Should().BeNull();
    }
}
