using KvStore.Raft.Quorum;

namespace KvStore.Raft;

/// <summary>Followers and candidates: accepting the leader's log, heartbeats and snapshots; counting votes.</summary>
public sealed partial class RaftNode
{
    private void StepFollower(Message m)
    {
        switch (m.Type)
        {
            case MessageType.Prop:
            case MessageType.TransferLeader:
            case MessageType.ReadIndex:
                if (_lead == 0)
                {
                    LogInfo($"raft: {Id} no leader at term {_term}; dropping {m.Type}");
                    return;
                }

                Forward(m);
                break;
            case MessageType.App:
                _electionElapsed = 0;
                _lead = m.From;
                HandleAppendEntries(m);
                break;
            case MessageType.Heartbeat:
                _electionElapsed = 0;
                _lead = m.From;
                HandleHeartbeat(m);
                break;
            case MessageType.Snap:
                _electionElapsed = 0;
                _lead = m.From;
                HandleSnapshot(m);
                break;
            case MessageType.TimeoutNow:
                LogInfo($"raft: {Id} [term {_term}] received TimeoutNow from {m.From}: campaigning now");
                Hup(transfer: true);
                break;
            case MessageType.ReadIndexResp:
                _readStates.Add(new ReadState(m.Index, m.Context));
                break;
            default:
                break;
        }
    }

    private void StepCandidate(Message m)
    {
        var myVoteResp = _role == RaftRole.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
        switch (m.Type)
        {
            case MessageType.App:
                BecomeFollower(m.Term, m.From);
                HandleAppendEntries(m);
                break;
            case MessageType.Heartbeat:
                BecomeFollower(m.Term, m.From);
                HandleHeartbeat(m);
                break;
            case MessageType.Snap:
                BecomeFollower(m.Term, m.From);
                HandleSnapshot(m);
                break;
            case MessageType.VoteResp:
            case MessageType.PreVoteResp:
                if (m.Type != myVoteResp)
                {
                    return;
                }

                switch (Poll(m.From, !m.Reject))
                {
                    case VoteResult.Won:
                        if (_role == RaftRole.PreCandidate)
                        {
                            Campaign(CampaignKind.Election);
                        }
                        else
                        {
                            BecomeLeader();
                        }

                        break;
                    case VoteResult.Lost:
                        // A pre-candidate returns to follower at its unchanged term.
                        BecomeFollower(_term, 0);
                        break;
                    default:
                        break;
                }

                break;
            default:
                // Proposals, reads and TimeoutNow are dropped: there is no leader to serve them.
                break;
        }
    }

    private void Forward(Message m)
    {
        var copy = m.Clone();
        copy.To = _lead;
        copy.Term = 0;
        Send(copy);
    }

    private void HandleAppendEntries(Message m)
    {
        if (m.Index < _log.Committed)
        {
            Send(new Message { Type = MessageType.AppResp, To = m.From, Index = _log.Committed });
            return;
        }

        var lastNew = _log.MaybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries);
        if (lastNew is not null)
        {
            Send(new Message { Type = MessageType.AppResp, To = m.From, Index = lastNew.Value });
            return;
        }

        // Consistency check failed. Tell the leader the largest index where we could match: at most our last
        // index, and skipping back over our entries whose term is newer than the leader's entry at m.Index.
        var hintIndex = Math.Min(m.Index, _log.LastIndex());
        hintIndex = _log.FindConflictByTerm(hintIndex, m.LogTerm);
        var hintTerm = _log.TermOrZero(hintIndex);
        Send(new Message
        {
            Type = MessageType.AppResp,
            To = m.From,
            Index = m.Index,
            Reject = true,
            RejectHint = hintIndex,
            LogTerm = hintTerm,
        });
    }

    private void HandleHeartbeat(Message m)
    {
        _log.CommitTo(m.Commit);
        Send(new Message { Type = MessageType.HeartbeatResp, To = m.From, Context = m.Context });
    }

    private void HandleSnapshot(Message m)
    {
        if (m.Snapshot is not null && Restore(m.Snapshot))
        {
            LogInfo($"raft: {Id} restored snapshot {m.Snapshot.Metadata.Index}/{m.Snapshot.Metadata.Term}");
            Send(new Message { Type = MessageType.AppResp, To = m.From, Index = _log.LastIndex() });
        }
        else
        {
            Send(new Message { Type = MessageType.AppResp, To = m.From, Index = _log.Committed });
        }
    }

    private bool Restore(Snapshot s)
    {
        var meta = s.Metadata;
        if (meta.Index <= _log.Committed)
        {
            return false;
        }

        if (_log.MatchTerm(meta.Index, meta.Term))
        {
            // We already have the snapshot's last entry: just learn that it is committed.
            _log.CommitTo(meta.Index);
            return false;
        }

        _log.Restore(s);
        _tracker.Reset(meta.ConfState, _log.LastIndex() + 1);
        return true;
    }
}
