using KvStore.Raft.Quorum;
using KvStore.Raft.Storage;

namespace KvStore.Raft;

/// <summary>Terms, roles, timers and elections (Raft §5.2, pre-vote and leader lease from Ongaro's thesis §9.6).</summary>
public sealed partial class RaftNode
{
    private enum CampaignKind
    {
        PreElection,
        Election,
        Transfer,
    }

    private void StepInternal(Message m)
    {
        if (m.Term == 0)
        {
            // Local message, or a request (proposal, read, transfer) that carries no term.
        }
        else if (m.Term > _term)
        {
            if (m.Type is MessageType.Vote or MessageType.PreVote)
            {
                var force = m.Context.Span.SequenceEqual(TransferContext);
                var inLease = _config.CheckQuorum && _lead != 0 && _electionElapsed < _config.ElectionTick;
                if (!force && inLease)
                {
                    // We heard from a live leader within the minimum election timeout: do not let a member that
                    // merely lost contact (or rejoins) depose it.
                    LogInfo($"raft: {Id} [term {_term}] ignores {m.Type} from {m.From} [term {m.Term}]: lease not expired");
                    return;
                }
            }

            if (m.Type == MessageType.PreVote)
            {
                // A pre-vote at a future term changes nothing here.
            }
            else if (m.Type == MessageType.PreVoteResp && !m.Reject)
            {
                // A granted pre-vote carries the term we would campaign at; our term moves only when we campaign.
            }
            else
            {
                LogInfo($"raft: {Id} [term {_term}] received {m.Type} from {m.From} at higher term {m.Term}");
                var lead = m.Type is MessageType.App or MessageType.Heartbeat or MessageType.Snap ? m.From : 0;
                BecomeFollower(m.Term, lead);
            }
        }
        else if (m.Term < _term)
        {
            if ((_config.CheckQuorum || _config.PreVote) && m.Type is MessageType.App or MessageType.Heartbeat)
            {
                // A stale leader (e.g. after a partition) learns our term and steps down; with lease or pre-vote we
                // would otherwise never bump its term through votes.
                Send(new Message { Type = MessageType.AppResp, To = m.From });
            }
            else if (m.Type == MessageType.PreVote)
            {
                Send(new Message { Type = MessageType.PreVoteResp, To = m.From, Term = _term, Reject = true });
            }

            return;
        }

        switch (m.Type)
        {
            case MessageType.Hup:
                Hup(transfer: false);
                break;
            case MessageType.Vote:
            case MessageType.PreVote:
                HandleVoteRequest(m);
                break;
            default:
                _step(m);
                break;
        }
    }

    private void HandleVoteRequest(Message m)
    {
        var canVote = _vote == m.From
            || (_vote == 0 && _lead == 0)
            || (m.Type == MessageType.PreVote && m.Term > _term);
        var respType = m.Type == MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
        if (canVote && _log.IsUpToDate(m.Index, m.LogTerm))
        {
            // A granted pre-vote answers at the candidate's future term so it is not dropped as stale there.
            Send(new Message { Type = respType, To = m.From, Term = m.Term });
            if (m.Type == MessageType.Vote)
            {
                _electionElapsed = 0;
                _vote = m.From;
            }
        }
        else
        {
            Send(new Message { Type = respType, To = m.From, Term = _term, Reject = true });
        }
    }

    private void Hup(bool transfer)
    {
        if (_role == RaftRole.Leader)
        {
            return;
        }

        if (!IsPromotable)
        {
            return;
        }

        if (HasUnappliedConfChanges())
        {
            // The membership we would count votes in is about to change; wait until it is applied.
            LogInfo($"raft: {Id} cannot campaign at term {_term}: committed conf changes are not applied yet");
            return;
        }

        Campaign(transfer ? CampaignKind.Transfer : _config.PreVote ? CampaignKind.PreElection : CampaignKind.Election);
    }

    private bool HasUnappliedConfChanges()
    {
        if (_log.Committed <= _log.Applied)
        {
            return false;
        }

        if (_log.Slice(_log.Applied + 1, _log.Committed + 1, ulong.MaxValue, out var ents) != StorageStatus.Ok)
        {
            return false;
        }

        return ents.Any(e => e.Type == EntryType.ConfChange);
    }

    private void Campaign(CampaignKind kind)
    {
        ulong term;
        MessageType voteType;
        if (kind == CampaignKind.PreElection)
        {
            BecomePreCandidate();
            voteType = MessageType.PreVote;
            term = _term + 1;
        }
        else
        {
            BecomeCandidate();
            voteType = MessageType.Vote;
            term = _term;
        }

        if (Poll(Id, true) == VoteResult.Won)
        {
            // Single voter: won at once.
            if (kind == CampaignKind.PreElection)
            {
                Campaign(CampaignKind.Election);
            }
            else
            {
                BecomeLeader();
            }

            return;
        }

        var context = kind == CampaignKind.Transfer ? TransferContext : ReadOnlyMemory<byte>.Empty;
        foreach (var id in _tracker.Voters)
        {
            if (id == Id)
            {
                continue;
            }

            Send(new Message
            {
                Type = voteType,
                To = id,
                Term = term,
                Index = _log.LastIndex(),
                LogTerm = _log.LastTerm(),
                Context = context,
            });
        }
    }

    private VoteResult Poll(ulong id, bool granted)
    {
        _tracker.RecordVote(id, granted);
        return _tracker.TallyVotes();
    }

    private void Reset(ulong term)
    {
        if (_term != term)
        {
            _term = term;
            _vote = 0;
        }

        _lead = 0;
        _electionElapsed = 0;
        _heartbeatElapsed = 0;
        _randomizedElectionTimeout = _config.ElectionTick + _random.NextBelow(_config.ElectionTick);
        _leadTransferee = 0;
        _tracker.ResetVotes();
        _tracker.ResetProgress(_log.LastIndex(), _log.LastStableIndex(), Id);
        _pendingConfIndex = 0;
        _readOnly.Clear();
        _pendingReadIndex.Clear();
    }

    private void BecomeFollower(ulong term, ulong lead)
    {
        _step = StepFollower;
        Reset(term);
        _tick = TickElection;
        _lead = lead;
        _role = RaftRole.Follower;
    }

    private void BecomeCandidate()
    {
        if (_role == RaftRole.Leader)
        {
            Panic("raft: invalid transition [leader -> candidate]");
        }

        _step = StepCandidate;
        Reset(_term + 1);
        _tick = TickElection;
        _vote = Id;
        _role = RaftRole.Candidate;
        LogInfo($"raft: {Id} became candidate at term {_term}");
    }

    private void BecomePreCandidate()
    {
        if (_role == RaftRole.Leader)
        {
            Panic("raft: invalid transition [leader -> pre-candidate]");
        }

        // Term and vote stay: a pre-election must not disturb anyone.
        _step = StepCandidate;
        _tracker.ResetVotes();
        _tick = TickElection;
        _lead = 0;
        _role = RaftRole.PreCandidate;
        LogInfo($"raft: {Id} became pre-candidate at term {_term}");
    }

    private void BecomeLeader()
    {
        if (_role == RaftRole.Follower)
        {
            Panic("raft: invalid transition [follower -> leader]");
        }

        _step = StepLeader;
        Reset(_term);
        _tick = TickHeartbeat;
        _lead = Id;
        _role = RaftRole.Leader;

        // Conservatively treat every entry up to here as a possible pending conf change: no new change is accepted
        // until everything this leader inherited is applied (this also closes the single-step membership hole).
        _pendingConfIndex = _log.LastIndex();

        // Raft §5.4.2 / §8: an entry of our own term lets us commit everything before it.
        AppendEntries([new Entry { Type = EntryType.Normal }]);
        LogInfo($"raft: {Id} became leader at term {_term}");
        BcastAppend();
    }

    private void TickElection()
    {
        _electionElapsed++;
        if (IsPromotable && _electionElapsed >= _randomizedElectionTimeout)
        {
            _electionElapsed = 0;
            Hup(transfer: false);
        }
    }

    private void TickHeartbeat()
    {
        _heartbeatElapsed++;
        _electionElapsed++;
        if (_electionElapsed >= _config.ElectionTick)
        {
            _electionElapsed = 0;
            if (_config.CheckQuorum)
            {
                StepLeader(new Message { Type = MessageType.CheckQuorum, From = Id });
            }

            if (_role == RaftRole.Leader && _leadTransferee != 0)
            {
                // The transferee did not take over within an election timeout: resume normal service.
                LogInfo($"raft: {Id} aborts leadership transfer to {_leadTransferee}");
                _leadTransferee = 0;
            }
        }

        if (_role != RaftRole.Leader)
        {
            return;
        }

        if (_heartbeatElapsed >= _config.HeartbeatTick)
        {
            _heartbeatElapsed = 0;
            BcastHeartbeat();
        }
    }
}
