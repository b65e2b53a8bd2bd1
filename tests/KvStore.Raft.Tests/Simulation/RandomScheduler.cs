namespace KvStore.Raft.Tests.Simulation;

/// <summary>Outcome of one seed.</summary>
internal sealed record SeedResult(ulong Seed, int Size, IReadOnlyList<string> Violations, string? LivenessFailure, int Committed, int Reads)
{
    public bool Ok => Violations.Count == 0 && LivenessFailure is null;

    public string Describe() => Ok
        ? $"seed {Seed} ok ({Size} members, {Committed} committed, {Reads} reads checked)"
        : $"seed {Seed} ({Size} members): {string.Join(" | ", Violations.Take(3))}{(LivenessFailure is null ? string.Empty : " | liveness: " + LivenessFailure)}";
}

/// <summary>
/// Drives a <see cref="SimCluster"/> with seeded chaos — delivery in random order, drops, duplicates, partitions,
/// crashes (also between persisting and sending), restarts, proposals, reads, conf changes, transfers, compaction —
/// checking safety after every step; then heals everything and checks liveness within a bounded number of ticks.
/// </summary>
internal sealed class RandomScheduler
{
    public const int ChaosSteps = 800;
    public const int LivenessTickBound = 40;

    private readonly ulong _seed;
    private readonly SimRandom _rnd;
    private readonly SimCluster _cluster;
    private readonly HashSet<ulong> _everAdded;
    private readonly int _size;

    public RandomScheduler(ulong seed, Action<string>? trace = null, bool disableCurrentTermCommitRule = false)
    {
        _seed = seed;
        _rnd = new SimRandom(seed);
        _size = (int)(seed % 3) switch { 0 => 3, 1 => 5, _ => 7 };
        var options = new SimOptions
        {
            Seed = seed,
            ElectionTick = 4 + _rnd.Next(4),
            PreVote = !_rnd.Chance(20),
            CheckQuorum = !_rnd.Chance(20),
            MaxSizePerMsg = _rnd.Chance(50) ? 64UL : 1024UL * 1024,
            MaxInflight = 1 + _rnd.Next(8),
            Spares = 2,
            DisableCurrentTermCommitRule = disableCurrentTermCommitRule,
        };
        _cluster = new SimCluster(_size, options, trace);
        _cluster.Trace($"seed {seed}: {_size} members, {options}");
        _everAdded = [.. _cluster.InitialIds];
    }

    public SimCluster Cluster => _cluster;

    public SeedResult Run()
    {
        try
        {
            for (var step = 0; step < ChaosSteps && !_cluster.Checker.Failed; step++)
            {
                ChaosStep(step);
                _cluster.ObserveAll();
            }

            var liveness = _cluster.Checker.Failed ? null : CheckLiveness();
            return Result(liveness);
        }
        catch (RaftInvariantException e)
        {
            _cluster.Checker.Fail("panic: " + e.Message);
            return Result(null);
        }
    }

    private SeedResult Result(string? liveness) =>
        new(_seed, _size, _cluster.Checker.Violations, liveness, (int)_cluster.Checker.MaxApplied, _cluster.Checker.ReadsChecked);

    private void ChaosStep(int step)
    {
        var roll = _rnd.Next(1000);
        var up = _cluster.Up.Select(m => m.Id).ToList();
        switch (roll)
        {
            case < 150:
                _cluster.TickAll();
                break;
            case < 560:
                // Deliver a few messages in random order (reordering); occasionally duplicate one.
                for (var n = 1 + _rnd.Next(Math.Max(6, _cluster.InFlight.Count / 2)); n > 0 && _cluster.InFlight.Count > 0; n--)
                {
                    var i = _rnd.Next(_cluster.InFlight.Count);
                    _cluster.Deliver(i, duplicate: _rnd.Chance(3));
                }

                break;
            case < 580:
                for (var n = 1 + _rnd.Next(3); n > 0 && _cluster.InFlight.Count > 0; n--)
                {
                    _cluster.Drop(_rnd.Next(_cluster.InFlight.Count));
                }

                break;
            case < 830:
                if (up.Count > 0 && _rnd.Chance(60))
                {
                    // Most members get their Ready handled; the order varies.
                    foreach (var id in up.OrderBy(_ => _rnd.Next(1000)).Where(_ => _rnd.Chance(80)))
                    {
                        _cluster.ProcessReady(id, crashAfterPersist: _rnd.Chance(1));
                    }
                }
                else if (up.Count > 0)
                {
                    _cluster.ProcessReady(_rnd.Pick(up), crashAfterPersist: _rnd.Chance(1));
                }

                break;
            case < 910:
                if (up.Count > 0)
                {
                    _cluster.Propose(_rnd.Pick(up), out _);
                }

                break;
            case < 930:
                if (up.Count > 0)
                {
                    _cluster.ReadIndex(_rnd.Pick(up));
                }

                break;
            case < 950:
                if (up.Count > 0)
                {
                    _cluster.Compact(_rnd.Pick(up));
                }

                break;
            case < 960:
                Partition();
                break;
            case < 975:
                _cluster.Heal();
                break;
            case < 982:
                if (up.Count > 0)
                {
                    _cluster.Crash(_rnd.Pick(up));
                }

                break;
            case < 995:
                var down = _cluster.Members.Values.Where(m => !m.IsUp).Select(m => m.Id).ToList();
                if (down.Count > 0)
                {
                    _cluster.Restart(_rnd.Pick(down));
                }
                else
                {
                    ConfChange(up);
                }

                break;
            default:
                Transfer(up);
                break;
        }

        // Keep the network bounded: very old messages are lost.
        while (_cluster.InFlight.Count > 400)
        {
            _cluster.Drop(0);
        }

        _ = step;
    }

    private void Partition()
    {
        var ids = _cluster.Members.Keys.ToList();
        var side = ids.Where(_ => _rnd.Chance(50)).ToList();
        if (side.Count == 0 || side.Count == ids.Count)
        {
            side = [_rnd.Pick(ids)];
        }

        _cluster.Heal();
        _cluster.Partition(side);
    }

    private void ConfChange(List<ulong> up)
    {
        if (up.Count == 0)
        {
            return;
        }

        var via = _rnd.Pick(up);
        var conf = _cluster.Node(via).ConfState;
        var spares = _cluster.Members.Keys.Where(id => !_everAdded.Contains(id)).ToList();
        ConfChange? cc = null;
        switch (_rnd.Next(3))
        {
            case 0 when spares.Count > 0:
                cc = new ConfChange { Type = ConfChangeType.AddLearnerNode, NodeId = spares[0] };
                break;
            case 1 when conf.Learners.Count > 0:
                cc = new ConfChange { Type = ConfChangeType.AddNode, NodeId = _rnd.Pick(conf.Learners) };
                break;
            case 2 when conf.Voters.Count > 2:
                cc = new ConfChange { Type = ConfChangeType.RemoveNode, NodeId = _rnd.Pick(conf.Voters) };
                break;
            default:
                break;
        }

        if (cc is null)
        {
            return;
        }

        var r = _cluster.Node(via).ProposeConfChange(cc);
        if (r is RequestResult.Accepted or RequestResult.Forwarded && cc.Type == ConfChangeType.AddLearnerNode)
        {
            // Never reuse an id, even if this proposal gets lost.
            _everAdded.Add(cc.NodeId);
        }

        _cluster.Trace($"conf change {cc} via {via}: {r}");
    }

    private void Transfer(List<ulong> up)
    {
        if (up.Count == 0)
        {
            return;
        }

        var via = _rnd.Pick(up);
        var voters = _cluster.Node(via).ConfState.Voters;
        if (voters.Count == 0)
        {
            return;
        }

        var to = _rnd.Pick(voters);
        var r = _cluster.Node(via).TransferLeadership(to);
        _cluster.Trace($"transfer to {to} via {via}: {r}");
    }

    /// <summary>
    /// Heals the network and restarts everyone; a leader must then be elected and a proposal committed and applied
    /// by every member of the final configuration within <see cref="LivenessTickBound"/> election timeouts' worth of ticks.
    /// </summary>
    private string? CheckLiveness()
    {
        _cluster.Trace("---- liveness: heal and restart everyone ----");
        _cluster.Heal();
        foreach (var m in _cluster.Members.Values.Where(m => !m.IsUp).ToList())
        {
            _cluster.Restart(m.Id);
        }

        ulong? markerIndex = null;
        (ulong Leader, ulong Term) markerOwner = (0, 0);
        var bound = LivenessTickBound * 8;
        for (var tick = 0; tick < bound; tick++)
        {
            _cluster.TickAll();
            _cluster.Stabilize();
            if (_cluster.Checker.Failed)
            {
                return null;
            }

            var leader = _cluster.Leader();
            if (leader is null)
            {
                continue;
            }

            var node = _cluster.Node(leader.Value);
            if (markerIndex is null || markerOwner != (leader.Value, node.Term))
            {
                if (_cluster.Propose(leader.Value, out _) == RequestResult.Accepted)
                {
                    markerIndex = node.LastIndex;
                    markerOwner = (leader.Value, node.Term);
                }

                continue;
            }

            var conf = node.ConfState;
            if (node.Role == RaftRole.Leader && node.CommitIndex >= markerIndex.Value
                && conf.Voters.Concat(conf.Learners).All(id => _cluster.HasApplied(id, markerIndex.Value)))
            {
                _cluster.Trace($"liveness ok after {tick + 1} ticks: marker {markerIndex} applied by {conf}");
                return null;
            }
        }

        var summary = string.Join("; ", _cluster.Members.Values.Select(m =>
            $"{m.Id}:{m.Node!.Role} t{m.Node.Term} lead={m.Node.Leader} commit={m.Node.CommitIndex} applied={m.SmApplied} last={m.Node.LastIndex} {m.Node.ConfState}"));
        return $"no progress within {bound} ticks (marker {markerIndex}): {summary}";
    }
}
