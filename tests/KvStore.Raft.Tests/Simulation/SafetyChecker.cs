namespace KvStore.Raft.Tests.Simulation;

/// <summary>
/// Global invariants, checked after every simulation step:
/// Election Safety (one leader per term), Log Matching (equal index and term imply equal prefixes, over persisted
/// logs), Leader Completeness (a new leader holds every entry committed in an earlier term), State Machine Safety
/// (one entry per index across all appliers, including re-application after restart and snapshot installs),
/// Commit agreement (no two members consider different entries committed at one index), and read linearizability
/// (a released read index covers everything committed before the read was issued).
/// </summary>
internal sealed class SafetyChecker
{
    private readonly Dictionary<ulong, ulong> _leaderOfTerm = [];
    private readonly Dictionary<(ulong Index, ulong Term), ulong> _logChains = [];
    private readonly Dictionary<ulong, ulong> _appliedChains = [];
    private readonly List<(ulong Term, ulong MinObservedTerm)> _committed = [(0, 0)];
    private readonly Dictionary<string, ulong> _readIssuedAtCommit = [];

    public List<string> Violations { get; } = [];

    public ulong MaxCommitted => (ulong)_committed.Count - 1;

    public ulong MaxApplied { get; private set; }

    public int ReadsChecked { get; private set; }

    public bool Failed => Violations.Count > 0;

    public void Fail(string violation) => Violations.Add(violation);

    /// <summary>Called after every step for every running member.</summary>
    public void Observe(SimMember m)
    {
        var node = m.Node!;
        if (node.Role == RaftRole.Leader)
        {
            if (_leaderOfTerm.TryGetValue(node.Term, out var other))
            {
                if (other != node.Id)
                {
                    Fail($"Election Safety: {other} and {node.Id} are both leaders of term {node.Term}");
                }
            }
            else
            {
                _leaderOfTerm[node.Term] = node.Id;
                CheckLeaderCompleteness(node);
            }
        }

        var commit = node.CommitIndex;
        if (commit > m.ObservedCommit)
        {
            var from = Math.Max(m.ObservedCommit + 1, node.FirstIndex);
            for (var i = from; i <= commit; i++)
            {
                var t = node.TermAt(i);
                if (t == 0)
                {
                    continue;
                }

                if (i < (ulong)_committed.Count)
                {
                    var (ct, minObs) = _committed[(int)i];
                    if (ct == 0)
                    {
                        _committed[(int)i] = (t, node.Term);
                        continue;
                    }

                    if (ct != t)
                    {
                        Fail($"Commit agreement: member {node.Id} committed {i}/{t} but {i}/{ct} was committed before");
                    }

                    _committed[(int)i] = (ct, Math.Min(minObs, node.Term));
                }
                else
                {
                    while ((ulong)_committed.Count < i)
                    {
                        // Indexes below another member's snapshot: term unknown to us; never checked.
                        _committed.Add((0, ulong.MaxValue));
                    }

                    _committed.Add((t, node.Term));
                }
            }

            m.ObservedCommit = commit;
        }
    }

    private void CheckLeaderCompleteness(RaftNode leader)
    {
        for (var i = MaxCommitted; i > 0; i--)
        {
            var (term, minObs) = _committed[(int)i];
            if (term == 0 || minObs >= leader.Term)
            {
                continue;
            }

            // Entry i was committed in a term before this leader's: the leader must hold it.
            if (i + 1 < leader.FirstIndex)
            {
                return; // covered by the leader's snapshot, itself checked by State Machine Safety
            }

            var have = leader.TermAt(i);
            if (have != term)
            {
                Fail($"Leader Completeness: leader {leader.Id} of term {leader.Term} has {i}/{have}, committed entry is {i}/{term}");
            }

            return;
        }
    }

    /// <summary>A member persisted an entry (or a snapshot position) whose prefix hashes to <paramref name="chain"/>.</summary>
    public void Persisted(ulong member, ulong index, ulong term, ulong chain)
    {
        if (_logChains.TryGetValue((index, term), out var known))
        {
            if (known != chain)
            {
                Fail($"Log Matching: member {member} holds {index}/{term} with a different prefix than another member");
            }
        }
        else
        {
            _logChains[(index, term)] = chain;
        }
    }

    /// <summary>A member's state machine reached <paramref name="index"/> with the given chain.</summary>
    public void Applied(ulong member, ulong index, ulong chain, string how)
    {
        if (_appliedChains.TryGetValue(index, out var known))
        {
            if (known != chain)
            {
                Fail($"State Machine Safety: member {member} {how} a different entry at index {index} than another member applied");
            }
        }
        else
        {
            _appliedChains[index] = chain;
        }

        MaxApplied = Math.Max(MaxApplied, index);
    }

    public bool TryAppliedChain(ulong index, out ulong chain) => _appliedChains.TryGetValue(index, out chain);

    public void ReadIssued(ReadOnlyMemory<byte> ctx) => _readIssuedAtCommit[Convert.ToHexString(ctx.Span)] = MaxCommitted;

    public void ReadReleased(ulong member, ReadState rs)
    {
        if (_readIssuedAtCommit.Remove(Convert.ToHexString(rs.Context.Span), out var atIssue))
        {
            ReadsChecked++;
            if (rs.Index < atIssue)
            {
                Fail($"Linearizable read: member {member} released read at {rs.Index}, but {atIssue} was committed when it was issued");
            }
        }
    }
}
