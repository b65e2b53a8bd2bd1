using KvStore.Raft.Storage;
using KvStore.Raft.Tracker;

namespace KvStore.Raft;

/// <summary>The leader: proposals, log replication with per-follower flow control, commitment, transfer.</summary>
public sealed partial class RaftNode
{
    private void StepLeader(Message m)
    {
        switch (m.Type)
        {
            case MessageType.Beat:
                BcastHeartbeat();
                return;
            case MessageType.CheckQuorum:
                if (!_tracker.QuorumActive(Id))
                {
                    LogInfo($"raft: {Id} stepped down at term {_term}: quorum not active");
                    BecomeFollower(_term, 0);
                    return;
                }

                foreach (var (id, p) in _tracker.Progress)
                {
                    p.RecentActive = id == Id;
                }

                return;
            case MessageType.Prop:
                LeaderPropose(m.Entries);
                return;
            case MessageType.ReadIndex:
                LeaderReadIndex(m);
                return;
            default:
                break;
        }

        if (!_tracker.Progress.TryGetValue(m.From, out var pr))
        {
            return;
        }

        switch (m.Type)
        {
            case MessageType.AppResp:
                HandleAppendResponse(m, pr);
                break;
            case MessageType.HeartbeatResp:
                pr.RecentActive = true;
                pr.ProbeSent = false;
                if (pr.State == ProgressState.Replicate && pr.Inflights.Full)
                {
                    pr.Inflights.FreeFirstOne();
                }

                if (pr.Match < _log.LastIndex())
                {
                    SendAppend(m.From);
                }

                if (m.Context.Length > 0 && _readOnly.Ack(m.From, m.Context, _tracker.Voters))
                {
                    foreach (var (index, request) in _readOnly.Advance(m.Context))
                    {
                        ReleaseRead(index, request);
                    }
                }

                break;
            case MessageType.SnapStatus:
                if (pr.State != ProgressState.Snapshot)
                {
                    return;
                }

                if (m.Reject)
                {
                    pr.PendingSnapshot = 0;
                }

                // Either way wait for the follower's reply or the next heartbeat before probing again.
                pr.BecomeProbe();
                pr.ProbeSent = true;
                break;
            case MessageType.Unreachable:
                if (pr.State == ProgressState.Replicate)
                {
                    pr.BecomeProbe();
                }

                break;
            case MessageType.TransferLeader:
                HandleTransferLeader(m.From, pr);
                break;
            default:
                break;
        }
    }

    private void HandleAppendResponse(Message m, Progress pr)
    {
        pr.RecentActive = true;
        if (m.Reject)
        {
            // The follower told us where its log could match (index ≤ hint with term ≤ hint term); skip every
            // index that cannot, instead of stepping back one entry per round trip.
            var next = m.RejectHint;
            if (m.LogTerm > 0)
            {
                next = _log.FindConflictByTerm(m.RejectHint, m.LogTerm);
            }

            if (pr.MaybeDecrTo(m.Index, next))
            {
                if (pr.State == ProgressState.Replicate)
                {
                    pr.BecomeProbe();
                }

                SendAppend(m.From);
            }

            return;
        }

        var oldPaused = pr.IsPaused;
        if (!pr.MaybeUpdate(m.Index))
        {
            return;
        }

        switch (pr.State)
        {
            case ProgressState.Probe:
                pr.BecomeReplicate();
                break;
            case ProgressState.Snapshot when pr.Match >= pr.PendingSnapshot:
                pr.BecomeProbe();
                pr.BecomeReplicate();
                break;
            case ProgressState.Replicate:
                pr.Inflights.FreeLE(m.Index);
                break;
            default:
                break;
        }

        if (MaybeCommit())
        {
            BcastAppend();
        }
        else if (oldPaused)
        {
            SendAppend(m.From);
        }

        while (_tracker.Progress.ContainsKey(m.From) && MaybeSendAppend(m.From, sendIfEmpty: false))
        {
        }

        if (m.From == _leadTransferee && pr.Match == _log.LastIndex())
        {
            LogInfo($"raft: {Id} sends TimeoutNow to {m.From}: log caught up");
            Send(new Message { Type = MessageType.TimeoutNow, To = m.From });
        }
    }

    private void HandleTransferLeader(ulong transferee, Progress pr)
    {
        if (pr.IsLearner)
        {
            return;
        }

        if (_leadTransferee != 0)
        {
            if (_leadTransferee == transferee)
            {
                return;
            }

            _leadTransferee = 0;
        }

        if (transferee == Id)
        {
            return;
        }

        // The transfer must finish within one election timeout (see TickHeartbeat).
        _electionElapsed = 0;
        _leadTransferee = transferee;
        LogInfo($"raft: {Id} starts leadership transfer to {transferee}");
        if (pr.Match == _log.LastIndex())
        {
            Send(new Message { Type = MessageType.TimeoutNow, To = transferee });
        }
        else
        {
            SendAppend(transferee);
        }
    }

    private RequestResult LeaderPropose(IReadOnlyList<Entry> entries)
    {
        if (entries.Count == 0)
        {
            return RequestResult.Accepted;
        }

        if (!_tracker.Progress.ContainsKey(Id))
        {
            return RequestResult.NotMember;
        }

        if (_leadTransferee != 0)
        {
            return RequestResult.LeaderTransferInProgress;
        }

        for (var i = 0; i < entries.Count; i++)
        {
            if (entries[i].Type != EntryType.ConfChange)
            {
                continue;
            }

            if (_pendingConfIndex > _log.Applied)
            {
                return RequestResult.ConfChangePending;
            }

            ConfChange cc;
            try
            {
                cc = ConfChange.Decode(entries[i].Data.Span);
            }
            catch (FormatException)
            {
                return RequestResult.InvalidConfChange;
            }

            if (!IsValidConfChange(cc))
            {
                return RequestResult.InvalidConfChange;
            }

            _pendingConfIndex = _log.LastIndex() + (ulong)i + 1;
        }

        AppendEntries(entries);
        BcastAppend();
        return RequestResult.Accepted;
    }

    private void AppendEntries(IReadOnlyList<Entry> entries)
    {
        var li = _log.LastIndex();
        var stamped = new List<Entry>(entries.Count);
        for (var i = 0; i < entries.Count; i++)
        {
            stamped.Add(new Entry { Index = li + 1 + (ulong)i, Term = _term, Type = entries[i].Type, Data = entries[i].Data });
        }

        _log.Append(stamped);

        // The leader counts its own copy only once it is persisted (see AckOwnStableEntries): an entry that is only
        // in memory here must not be committed, even when this member alone is a quorum.
    }

    /// <summary>Called from Advance: what the caller persisted now counts as stored by this member.</summary>
    private void AckOwnStableEntries()
    {
        if (_role != RaftRole.Leader || !_tracker.Progress.TryGetValue(Id, out var self))
        {
            return;
        }

        if (self.MaybeUpdate(_log.LastStableIndex()) && MaybeCommit())
        {
            BcastAppend();
        }
    }

    /// <summary>Advances the commit index to what a majority of voters stores, counting only our term's entries.</summary>
    private bool MaybeCommit()
    {
        var mci = _tracker.Committed();
        bool advanced;
        if (DisableCurrentTermCommitRule)
        {
            mci = Math.Min(mci, _log.LastIndex());
            advanced = mci > _log.Committed;
            if (advanced)
            {
                _log.CommitTo(mci);
            }
        }
        else
        {
            advanced = _log.MaybeCommit(mci, _term);
        }

        if (advanced)
        {
            ReleasePendingReadIndex();
        }

        return advanced;
    }

    private void BcastAppend()
    {
        foreach (var id in _tracker.Progress.Keys.ToList())
        {
            if (id != Id)
            {
                SendAppend(id);
            }
        }
    }

    private void BcastHeartbeat()
    {
        var ctx = _readOnly.LastPendingContext;
        foreach (var (id, pr) in _tracker.Progress)
        {
            if (id == Id)
            {
                continue;
            }

            // Never tell a follower to commit past what we know it stores.
            Send(new Message { Type = MessageType.Heartbeat, To = id, Commit = Math.Min(pr.Match, _log.Committed), Context = ctx });
        }
    }

    private void SendAppend(ulong to) => MaybeSendAppend(to, sendIfEmpty: true);

    /// <summary>Sends entries from the follower's Next (or a snapshot when they are compacted) unless it is paused.</summary>
    private bool MaybeSendAppend(ulong to, bool sendIfEmpty)
    {
        var pr = _tracker.Progress[to];
        if (pr.IsPaused)
        {
            return false;
        }

        var prevIndex = pr.Next - 1;
        var termStatus = _log.Term(prevIndex, out var prevTerm);
        var entStatus = _log.EntriesFrom(pr.Next, _config.MaxSizePerMsg, out var ents);
        if (termStatus == StorageStatus.Ok && entStatus == StorageStatus.Ok)
        {
            if (ents.Count == 0 && !sendIfEmpty)
            {
                return false;
            }

            if (ents.Count > 0)
            {
                switch (pr.State)
                {
                    case ProgressState.Replicate:
                        var last = ents[^1].Index;
                        pr.OptimisticUpdate(last);
                        pr.Inflights.Add(last);
                        break;
                    case ProgressState.Probe:
                        pr.ProbeSent = true;
                        break;
                    default:
                        Panic($"raft: {Id} is sending append in unhandled state {pr.State}");
                        break;
                }
            }

            Send(new Message
            {
                Type = MessageType.App,
                To = to,
                Index = prevIndex,
                LogTerm = prevTerm,
                Entries = ents,
                Commit = _log.Committed,
            });
            return true;
        }

        if (_log.Snapshot(out var snapshot) != StorageStatus.Ok)
        {
            LogInfo($"raft: {Id} failed to send snapshot to {to}: temporarily unavailable");
            return false;
        }

        if (snapshot.IsEmpty)
        {
            Panic("raft: need non-empty snapshot");
        }

        pr.BecomeSnapshot(snapshot.Metadata.Index);
        LogInfo($"raft: {Id} sends snapshot {snapshot.Metadata.Index}/{snapshot.Metadata.Term} to {to} [{pr}]");
        Send(new Message { Type = MessageType.Snap, To = to, Snapshot = snapshot });
        return true;
    }
}
