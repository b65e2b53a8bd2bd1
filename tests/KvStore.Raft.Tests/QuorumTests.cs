using KvStore.Raft.Quorum;
using KvStore.Raft.Tests.Simulation;

namespace KvStore.Raft.Tests;

public sealed class QuorumTests
{
    public static TheoryData<ulong[], ulong> CommitCases => new()
    {
        { [5], 5 },
        { [5, 3], 3 },
        { [5, 3, 1], 3 },
        { [9, 9, 1, 1], 1 },
        { [9, 9, 9, 1], 9 },
        { [7, 6, 5, 4, 3], 5 },
        { [0, 0, 0, 2, 2, 2, 2], 2 },
    };

    [Theory]
    [MemberData(nameof(CommitCases))]
    public void Committed_index_is_stored_by_a_majority(ulong[] acked, ulong want)
    {
        var voters = Enumerable.Range(1, acked.Length).Select(i => (ulong)i).ToList();
        MajorityQuorum.CommittedIndex(voters, id => acked[id - 1]).Should().Be(want);
    }

    [Fact]
    public void Committed_index_matches_a_naive_count_on_random_inputs()
    {
        var rnd = new SimRandom(99);
        for (var round = 0; round < 2000; round++)
        {
            var n = 1 + rnd.Next(9);
            var acked = Enumerable.Range(0, n).Select(_ => (ulong)rnd.Next(20)).ToArray();
            var voters = Enumerable.Range(1, n).Select(i => (ulong)i).ToList();

            // Naive: the largest index that at least N/2+1 voters have acknowledged.
            var naive = Enumerable.Range(0, 21).Select(i => (ulong)i).Where(i => acked.Count(a => a >= i) >= (n / 2) + 1).Max();
            MajorityQuorum.CommittedIndex(voters, id => acked[id - 1]).Should().Be(naive);
        }
    }

    [Theory]
    [InlineData(3, 2, 0, 1)]
    [InlineData(3, 1, 1, 0)]
    [InlineData(3, 1, 2, 2)]
    [InlineData(4, 2, 0, 0)]
    [InlineData(4, 2, 2, 2)]
    [InlineData(5, 3, 2, 1)]
    [InlineData(1, 1, 0, 1)]
    public void Votes_are_tallied_against_a_majority(int voters, int granted, int rejected, int want)
    {
        var ids = Enumerable.Range(1, voters).Select(i => (ulong)i).ToList();
        var votes = new Dictionary<ulong, bool>();
        for (var i = 0; i < granted; i++)
        {
            votes[ids[i]] = true;
        }

        for (var i = 0; i < rejected; i++)
        {
            votes[ids[granted + i]] = false;
        }

        MajorityQuorum.Tally(ids, votes).Should().Be((VoteResult)want);
    }
}
