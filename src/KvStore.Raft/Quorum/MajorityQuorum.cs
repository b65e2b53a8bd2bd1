namespace KvStore.Raft.Quorum;

/// <summary>Outcome of counting votes.</summary>
internal enum VoteResult
{
    /// <summary>Neither won nor lost yet.</summary>
    Pending = 0,

    /// <summary>A majority of voters granted.</summary>
    Won = 1,

    /// <summary>A majority can no longer be reached.</summary>
    Lost = 2,
}

/// <summary>Majority arithmetic over one set of voters (single-step membership needs no joint quorum).</summary>
internal static class MajorityQuorum
{
    /// <summary>Members needed for a majority of <paramref name="voters"/>: N/2+1.</summary>
    public static int Size(int voters) => (voters / 2) + 1;

    /// <summary>
    /// The highest index stored by a majority: sort the voters' acknowledged indexes descending and take the one at
    /// position N/2+1 (1-based). An empty configuration commits everything (ulong.MaxValue), as no one can object.
    /// </summary>
    public static ulong CommittedIndex(IReadOnlyCollection<ulong> voters, Func<ulong, ulong> ackedIndex)
    {
        if (voters.Count == 0)
        {
            return ulong.MaxValue;
        }

        Span<ulong> acked = voters.Count <= 16 ? stackalloc ulong[voters.Count] : new ulong[voters.Count];
        var k = 0;
        foreach (var id in voters)
        {
            acked[k++] = ackedIndex(id);
        }

        acked.Sort();

        // Ascending order: the element at position N - (N/2+1) is covered by N/2+1 voters (itself and those above).
        return acked[voters.Count - Size(voters.Count)];
    }

    /// <summary>Counts granted and rejected votes among <paramref name="voters"/> (missing votes are pending).</summary>
    public static VoteResult Tally(IReadOnlyCollection<ulong> voters, IReadOnlyDictionary<ulong, bool> votes)
    {
        if (voters.Count == 0)
        {
            return VoteResult.Won;
        }

        int granted = 0, rejected = 0, missing = 0;
        foreach (var id in voters)
        {
            if (!votes.TryGetValue(id, out var v))
            {
                missing++;
            }
            else if (v)
            {
                granted++;
            }
            else
            {
                rejected++;
            }
        }

        var q = Size(voters.Count);
        if (granted >= q)
        {
            return VoteResult.Won;
        }

        return granted + missing >= q ? VoteResult.Pending : VoteResult.Lost;
    }
}
