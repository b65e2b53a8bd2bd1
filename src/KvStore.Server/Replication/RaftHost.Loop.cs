using System.Diagnostics;
using KvStore.Raft;
using KvStore.Server.Peer;

namespace KvStore.Server.Replication;

/// <summary>The raft loop: the only code that touches the <see cref="RaftNode"/>.</summary>
public sealed partial class RaftHost
{
    private const int MaxProposalsPerBatch = 4096;

    private readonly Dictionary<ulong, ClusterMember> _initialMembers = [];
    private readonly Dictionary<ulong, ReceivedSnapshot> _receivedSnapshots = [];
    private readonly List<Proposal> _waitingForLeader = [];
    private long _ticks;
    private ulong _lastLeader;
    private RaftRole _lastRole;
    private ulong _syncedTerm;
    private ulong _syncedVote;

    private async Task RunLoopAsync()
    {
        var node = _node!;
        var reader = _inbox.Reader;
        try
        {
            while (true)
            {
                if (!node.HasReady() && !await reader.WaitToReadAsync())
                {
                    break;
                }

                var proposals = 0;
                while (proposals < MaxProposalsPerBatch && reader.TryRead(out var item))
                {
                    if (item.Kind == InboxKind.Proposal)
                    {
                        proposals++;
                    }

                    Handle(node, item);
                }

                // One Ready per round: proposals that arrived during its fsync join the next Ready (group commit).
                if (node.HasReady())
                {
                    await HandleReadyAsync(node, node.GetReady());
                }
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
        finally
        {
            _applyQueue.Writer.TryComplete();
        }
    }

    private void Handle(RaftNode node, in InboxItem item)
    {
        switch (item.Kind)
        {
            case InboxKind.Proposal:
                Propose(node, item.Proposal!);
                break;
            case InboxKind.Message:
                node.Step(item.Message!);
                break;
            case InboxKind.Snapshot:
                StepSnapshot(node, item.Snapshot!);
                break;
            case InboxKind.Unreachable:
                node.ReportUnreachable(item.Peer);
                break;
            case InboxKind.SnapshotStatus:
                node.ReportSnapshot(item.Peer, item.Succeeded ? SnapshotStatus.Finish : SnapshotStatus.Failure);
                break;
            case InboxKind.Read:
                _reads.IssuePending(_readIndex, _ticks);
                break;
            case InboxKind.Tick:
                Interlocked.Exchange(ref _tickPending, 0);
                _ticks++;
                node.Tick();
                OnTick(node);
                break;
            case InboxKind.TickAdvance:
                AdvanceTicks(node, item.Ticks);
                break;
            case InboxKind.Control:
                item.Control!.Run(node);
                break;
        }
    }

    private void Propose(RaftNode node, Proposal proposal)
    {
        if (!_pending.IsWaiting(proposal.Id))
        {
            return; // the caller gave up (timeout or cancellation)
        }

        switch (node.Propose(proposal.Data))
        {
            case RequestResult.Accepted or RequestResult.Forwarded:
                break;
            case RequestResult.NoLeader or RequestResult.LeaderTransferInProgress:
                _waitingForLeader.Add(proposal);
                break;
            default:
                if (_pending.TryTake(proposal.Id, out var waiter))
                {
                    waiter.TrySetException(EtcdErrors.Stopped.Exception());
                }

                break;
        }
    }

    /// <summary>
    /// The only voter cannot lose an election, so it need not wait out an election timeout first (etcd fast-forwards
    /// the election ticks of a one-member cluster for the same reason); this was most of a single member's start-up
    /// time. It campaigns as soon as its committed membership is applied: right after the Ready that hands it out at
    /// start, or at a later tick.
    /// </summary>
    private static void CampaignIfSoleVoter(RaftNode node)
    {
        if (node.Leader == 0 && node.IsPromotable && node.AppliedIndex >= node.CommitIndex && node.ConfState.Voters.Count == 1)
        {
            node.Campaign();
        }
    }

    private void OnTick(RaftNode node)
    {
        CampaignIfSoleVoter(node);

        _reads.OnTick(_readIndex, _ticks);

        // Proposals that arrived during a leader transfer are tried again once it is over.
        if (_waitingForLeader.Count > 0 && node.Leader != 0 && node.LeadTransferee == 0)
        {
            RetryWaitingForLeader(node);
        }
    }

    private void RetryWaitingForLeader(RaftNode node)
    {
        var waiting = _waitingForLeader.ToArray();
        _waitingForLeader.Clear();
        foreach (var proposal in waiting)
        {
            Propose(node, proposal);
        }
    }

    private void StepSnapshot(RaftNode node, ReceivedSnapshot snapshot)
    {
        var index = snapshot.Message.Snapshot?.Metadata.Index ?? 0;
        if (_receivedSnapshots.Remove(index, out var previous))
        {
            TryDelete(previous.FilePath);
        }

        _receivedSnapshots[index] = snapshot;
        node.Step(snapshot.Message);
    }

    private async Task HandleReadyAsync(RaftNode node, Ready rd)
    {
        if (rd.SoftState is { } soft)
        {
            OnSoftState(node, soft);
        }

        if (rd.HardState is { } hs)
        {
            _state.Term = hs.Term;
        }

        // A leader may send before its own fsync (it counts its own copy only after Advance); everyone else sends
        // only what the persisted state allows.
        var isLeader = node.Role == RaftRole.Leader;
        if (isLeader)
        {
            Send(rd.Messages);
        }

        if (rd.Snapshot is { IsEmpty: false } snapshot)
        {
            await InstallSnapshotAsync(snapshot);
        }

        if (rd.MustPersist)
        {
            _raftLog.Save(rd.HardState, rd.Entries, rd.Snapshot);

            // Only entries, a snapshot, the term and the vote must be durable before going on; a hard state that only
            // moved the commit index is written but not synced (a lost commit index is learned again from the leader).
            var mustSync = rd.Entries.Count > 0 || rd.Snapshot is not null
                || (rd.HardState is { } saved && (saved.Term != _syncedTerm || saved.Vote != _syncedVote));
            if (mustSync)
            {
                var started = Stopwatch.GetTimestamp();
                await _raftLog.SyncAsync();
                _metrics.WalFsync.Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
                if (rd.HardState is { } synced)
                {
                    _syncedTerm = synced.Term;
                    _syncedVote = synced.Vote;
                }
            }
        }

        if (!isLeader)
        {
            Send(rd.Messages);
        }

        if (rd.CommittedEntries.Count > 0)
        {
            _state.CommittedIndex = rd.CommittedEntries[^1].Index;
            _applyQueue.Writer.TryWrite(ApplyItem.Of(rd.CommittedEntries));
        }
        else if (node.CommitIndex > _state.CommittedIndex)
        {
            _state.CommittedIndex = node.CommitIndex;
        }

        _reads.Complete(rd.ReadStates);

        node.Advance(rd);
        if (rd.CommittedEntries.Count > 0)
        {
            CampaignIfSoleVoter(node);
        }
    }

    /// <summary>etcd's raft line for a role change ("8e9e05c52164694d became leader at term 2"), with the term as a field.</summary>
    private void LogRoleChange(RaftRole role, ulong term)
    {
        var name = role switch
        {
            RaftRole.PreCandidate => "pre-candidate",
            _ => role.ToString().ToLowerInvariant(),
        };
        EtcdLog.Info(_logger, $"{EtcdLog.Id(_identity.MemberId)} became {name} at term {term}", ("term", term));
    }

    /// <summary>etcd's raft.node lines for a leader change (elected, changed, lost), with the term as a field.</summary>
    private void LogLeaderChange(ulong previous, ulong leader, ulong term)
    {
        var self = EtcdLog.Id(_identity.MemberId);
        var message = (previous, leader) switch
        {
            (0, _) => $"raft.node: {self} elected leader {EtcdLog.Id(leader)} at term {term}",
            (_, 0) => $"raft.node: {self} lost leader {EtcdLog.Id(previous)} at term {term}",
            _ => $"raft.node: {self} changed leader from {EtcdLog.Id(previous)} to {EtcdLog.Id(leader)} at term {term}",
        };
        EtcdLog.Info(_logger, message, ("term", term));
    }

    private void OnSoftState(RaftNode node, SoftState soft)
    {
        _state.LeaderId = soft.Leader;
        if (soft.Role != _lastRole)
        {
            LogRoleChange(soft.Role, node.Term);
            _lastRole = soft.Role;
        }

        if (soft.Leader != _lastLeader)
        {
            if (soft.Leader != 0)
            {
                _metrics.LeaderChanges.Inc();
                NoteFirstLeader();
            }

            LogLeaderChange(_lastLeader, soft.Leader, node.Term);
            _lastLeader = soft.Leader;
        }

        _progress.LeaderChanged();
        if (soft.Leader != 0)
        {
            if (node.LeadTransferee == 0)
            {
                RetryWaitingForLeader(node);
            }

            _reads.OnNewLeader(_readIndex, _ticks);
        }
    }

    private void Send(IReadOnlyList<Message> messages)
    {
        if (messages.Count == 0 || _transport is null)
        {
            return;
        }

        List<Message>? plain = null;
        var hasSnapshot = false;
        foreach (var m in messages)
        {
            if (m.Type == MessageType.Snap)
            {
                hasSnapshot = true;
                break;
            }
        }

        if (!hasSnapshot)
        {
            _transport.Send(messages);
            return;
        }

        foreach (var m in messages)
        {
            if (m.Type == MessageType.Snap)
            {
                _ = SendSnapshotAsync(m);
            }
            else
            {
                (plain ??= []).Add(m);
            }
        }

        if (plain is not null)
        {
            _transport.Send(plain);
        }
    }

    private async Task RunTickerAsync(TimeSpan interval)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token))
            {
                // Ticks are coalesced: a loop busy with a slow fsync must not see a burst of ticks afterwards.
                if (Interlocked.Exchange(ref _tickPending, 1) == 0)
                {
                    _inbox.Writer.TryWrite(InboxItem.Tick);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // stopping
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // best effort: a leftover incoming snapshot is harmless
        }
        catch (UnauthorizedAccessException)
        {
            // as above
        }
    }
}
