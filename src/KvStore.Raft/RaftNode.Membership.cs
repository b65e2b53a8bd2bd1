namespace KvStore.Raft;

/// <summary>
/// Single-step membership changes, applied when their entry is applied (see docs/raft.md for why this is safe:
/// one change at a time, and a new leader accepts none until it applied everything it inherited).
/// </summary>
public sealed partial class RaftNode
{
    private HardState Bootstrap(IReadOnlyList<ulong> voters)
    {
        var entries = new List<Entry>(voters.Count);
        for (var i = 0; i < voters.Count; i++)
        {
            var cc = new ConfChange { Type = ConfChangeType.AddNode, NodeId = voters[i] };
            entries.Add(new Entry { Index = (ulong)i + 1, Term = 1, Type = EntryType.ConfChange, Data = cc.Encode() });
        }

        _log.Append(entries);

        // Every initial member writes the same entries at term 1 and treats them as committed; they are applied
        // (building the membership) through the first Ready like any other committed entry.
        return new HardState(1, 0, (ulong)entries.Count);
    }

    private bool IsValidConfChange(ConfChange cc)
    {
        if (cc.NodeId == 0)
        {
            return false;
        }

        return cc.Type switch
        {
            ConfChangeType.AddNode => !_tracker.IsVoter(cc.NodeId),
            ConfChangeType.AddLearnerNode => !_tracker.IsVoter(cc.NodeId) && !_tracker.IsLearner(cc.NodeId),
            ConfChangeType.RemoveNode => _tracker.IsLearner(cc.NodeId)
                || (_tracker.IsVoter(cc.NodeId) && _tracker.Voters.Count > 1),
            _ => false,
        };
    }

    /// <summary>Applies a committed change; invalid ones are ignored identically on every member.</summary>
    private void ApplyConfChange(ConfChange cc)
    {
        if (!IsValidConfChange(cc))
        {
            LogInfo($"raft: {Id} ignores invalid conf change {cc} against {_tracker.ConfState()}");
            return;
        }

        var next = _log.LastIndex() + 1;
        switch (cc.Type)
        {
            case ConfChangeType.AddNode:
                _tracker.AddVoter(cc.NodeId, next);
                break;
            case ConfChangeType.AddLearnerNode:
                _tracker.AddLearner(cc.NodeId, next);
                break;
            case ConfChangeType.RemoveNode:
                _tracker.Remove(cc.NodeId);
                break;
            default:
                break;
        }

        LogInfo($"raft: {Id} applied conf change {cc}: {_tracker.ConfState()}");
        if (_role != RaftRole.Leader)
        {
            return;
        }

        if (!_tracker.Progress.ContainsKey(Id))
        {
            // We were removed: stop leading; the remaining voters elect a leader after an election timeout.
            BecomeFollower(_term, 0);
            return;
        }

        if (_leadTransferee != 0 && !_tracker.IsVoter(_leadTransferee))
        {
            _leadTransferee = 0;
        }

        // The quorum changed: a removal may let entries commit.
        if (MaybeCommit())
        {
            BcastAppend();
        }
        else if (cc.Type != ConfChangeType.RemoveNode && _tracker.Progress.ContainsKey(cc.NodeId))
        {
            SendAppend(cc.NodeId);
        }
    }
}
