using KvStore.Raft.Quorum;

namespace KvStore.Raft.Tracker;

/// <summary>Membership (voters, learners), the leader's per-member progress and the votes of the current election.</summary>
internal sealed class ProgressTracker(int maxInflight)
{
    private readonly SortedSet<ulong> _voters = [];
    private readonly SortedSet<ulong> _learners = [];
    private readonly Dictionary<ulong, bool> _votes = [];

    public SortedDictionary<ulong, Progress> Progress { get; } = [];

    public IReadOnlyCollection<ulong> Voters => _voters;

    public IReadOnlyCollection<ulong> Learners => _learners;

    public int MaxInflight { get; } = maxInflight;

    public bool IsVoter(ulong id) => _voters.Contains(id);

    public bool IsLearner(ulong id) => _learners.Contains(id);

    public ConfState ConfState() => new() { Voters = [.. _voters], Learners = [.. _learners] };

    public void Reset(ConfState cs, ulong next)
    {
        _voters.Clear();
        _learners.Clear();
        Progress.Clear();
        foreach (var v in cs.Voters)
        {
            AddVoter(v, next);
        }

        foreach (var l in cs.Learners)
        {
            AddLearner(l, next);
        }
    }

    /// <summary>A new term: forget what was known about every follower; the leader itself has what it persisted.</summary>
    public void ResetProgress(ulong lastIndex, ulong selfStableIndex, ulong self)
    {
        foreach (var id in Progress.Keys.ToList())
        {
            var pr = new Progress(lastIndex + 1, MaxInflight, Progress[id].IsLearner);
            if (id == self)
            {
                pr.Match = selfStableIndex;
                pr.RecentActive = true;
            }

            Progress[id] = pr;
        }
    }

    public void AddVoter(ulong id, ulong next)
    {
        _learners.Remove(id);
        _voters.Add(id);
        if (Progress.TryGetValue(id, out var pr))
        {
            pr.IsLearner = false;
        }
        else
        {
            Progress[id] = new Progress(next, MaxInflight, false) { RecentActive = true };
        }
    }

    public void AddLearner(ulong id, ulong next)
    {
        _learners.Add(id);
        Progress[id] = new Progress(next, MaxInflight, true) { RecentActive = true };
    }

    public void Remove(ulong id)
    {
        _voters.Remove(id);
        _learners.Remove(id);
        Progress.Remove(id);
    }

    /// <summary>Largest index stored by a majority of voters.</summary>
    public ulong Committed() => MajorityQuorum.CommittedIndex(_voters, id => Progress.TryGetValue(id, out var p) ? p.Match : 0);

    /// <summary>True when a majority of voters was recently active (the leader counts itself).</summary>
    public bool QuorumActive(ulong self)
    {
        var active = 0;
        foreach (var id in _voters)
        {
            if (id == self || (Progress.TryGetValue(id, out var p) && p.RecentActive))
            {
                active++;
            }
        }

        return active >= MajorityQuorum.Size(_voters.Count);
    }

    public void ResetVotes() => _votes.Clear();

    public void RecordVote(ulong id, bool granted) => _votes.TryAdd(id, granted);

    public VoteResult TallyVotes() => MajorityQuorum.Tally(_voters, _votes);

    public (int Granted, int Rejected) VoteCounts()
    {
        int g = 0, r = 0;
        foreach (var (id, v) in _votes)
        {
            if (!_voters.Contains(id))
            {
                continue;
            }

            if (v)
            {
                g++;
            }
            else
            {
                r++;
            }
        }

        return (g, r);
    }
}
