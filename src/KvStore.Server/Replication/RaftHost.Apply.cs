using System.Diagnostics;
using KvStore.Internal;
using KvStore.Raft;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Replication;

/// <summary>The apply loop: committed entries into the store, in order, and what follows from them.</summary>
public sealed partial class RaftHost
{
    private static readonly InternalRequest EmptyRequest = new();

    /// <summary>etcd's default --experimental-warning-apply-duration: an entry slower than this counts as a slow apply.</summary>
    private static readonly TimeSpan SlowApplyThreshold = TimeSpan.FromMilliseconds(100);

    private ulong _appliedSinceSnapshot;

    // The --snapshot-count checkpoint being written while apply goes on (one at a time); completed when none is.
    private Task _snapshotInFlight = Task.CompletedTask;

    private async Task RunApplyLoopAsync()
    {
        var reader = _applyQueue.Reader;
        try
        {
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out var item))
                {
                    switch (item.Kind)
                    {
                        case ApplyKind.Entries:
                            await ApplyEntriesAsync(item.Entries!);
                            break;
                        case ApplyKind.SnapshotInstall:
                            await InstallAsync(item.Install!);
                            break;
                    }
                }
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    private async Task ApplyEntriesAsync(IReadOnlyList<Entry> entries)
    {
        var started = Stopwatch.GetTimestamp();
        var store = Store;
        foreach (var entry in entries)
        {
            if (entry.Index <= store.ConsistentIndex)
            {
                // Already in the store (replay after restart, or a snapshot newer than the log): only the table of
                // pending conf changes matters, and the store's member table already reflects it.
                _state.AppliedIndex = Math.Max(_state.AppliedIndex, entry.Index);
                continue;
            }

            var entryStarted = Stopwatch.GetTimestamp();
            try
            {
                if (entry.Type == EntryType.ConfChange)
                {
                    ApplyConfChange(store, entry);
                }
                else
                {
                    ApplyNormal(store, entry);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Log.ApplyFailed(_logger, entry.Index, e);
                throw;
            }

            _state.AppliedIndex = entry.Index;
            if (Stopwatch.GetElapsedTime(entryStarted) > SlowApplyThreshold)
            {
                _metrics.SlowApply.Inc();
            }
        }

        // The store takes the batch's writes here (its durable checkpoint comes with the raft snapshot).
        _metrics.BackendCommit.Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
        _progress.Applied();

        _appliedSinceSnapshot += (ulong)entries.Count;
        if (_appliedSinceSnapshot >= Math.Max(1, _options.SnapshotCount) && _snapshotInFlight.IsCompleted)
        {
            // While the previous one is still being written the count goes on, and the next batch starts it.
            _appliedSinceSnapshot = 0;
            _snapshotInFlight = SnapshotAsync(store);
            _ = _snapshotInFlight.ContinueWith(failed => Fail(failed.Exception!.GetBaseException()), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        }
    }

    private void ApplyNormal(MvccStore store, Entry entry)
    {
        var request = entry.Data.IsEmpty ? EmptyRequest : OwnProposal(entry.Data.Span) ?? InternalRequest.Parser.ParseFrom(entry.Data.Span);
        if (request.RequestCase == InternalRequest.RequestOneofCase.MemberAttributes)
        {
            ApplyMemberAttributes(store, entry.Index, request.MemberAttributes);
            Complete(request, null, new Etcdserverpb.MemberUpdateResponse());
            return;
        }

        // An empty entry (a new leader's) still records its index, so the consistent index equals the applied index.
        var outcome = _applier.Apply(entry.Index, request);
        Complete(request, outcome.Error, outcome.Response);
    }

    /// <summary>
    /// The request of a proposal this member made and still awaits, when the entry holds exactly its bytes: applied as
    /// it is instead of parsing the same bytes again. Another member's id could match (ids carry only 16 bits of the
    /// member id), so equal bytes, not the id, are the proof.
    /// </summary>
    private InternalRequest? OwnProposal(ReadOnlySpan<byte> data)
    {
        // The id (field 1, a varint) is encoded first when set.
        const byte IdTag = (1 << 3) | 0;
        if (data[0] != IdTag)
        {
            return null;
        }

        ulong id = 0;
        for (int i = 1, shift = 0; i < data.Length && shift < 64; i++, shift += 7)
        {
            id |= (ulong)(data[i] & 0x7F) << shift;
            if (data[i] < 0x80)
            {
                return _pending.Find(id) is { } proposal && data.SequenceEqual(proposal.Data) ? proposal.Request : null;
            }
        }

        return null;
    }

    private void Complete(InternalRequest request, EtcdError? error, Google.Protobuf.IMessage? response)
    {
        if (request.Id == 0 || request.Header?.MemberId != _identity.MemberId || !_pending.TryTake(request.Id, out var waiter))
        {
            return;
        }

        if (error is not null)
        {
            waiter.TrySetException(error.Exception());
        }
        else
        {
            waiter.TrySetResult(response ?? new Etcdserverpb.PutResponse());
        }
    }

    private void ApplyMemberAttributes(MvccStore store, ulong index, MemberAttributesRequest request)
    {
        using var txn = store.BeginWrite(index);
        if (_membership.Get(request.MemberId) is { } member)
        {
            if (request.UpdateNameAndClientUrls)
            {
                member = member with { Name = request.Name, ClientUrls = [.. request.ClientUrls] };
            }

            if (request.UpdatePeerUrls)
            {
                member = member with { PeerUrls = [.. request.PeerUrls] };
            }

            txn.PutMeta(ClusterMember.BucketName, ClusterMember.Key(member.Id), member.Encode());
            txn.Commit();
            _membership.Set(member);
            if (request.UpdatePeerUrls)
            {
                ConnectPeer(member);
            }

            return;
        }

        txn.Commit();
    }

    private void ApplyConfChange(MvccStore store, Entry entry)
    {
        var change = ConfChange.Decode(entry.Data.Span);
        var context = ConfChangeContext.Decode(change.Context.Span);
        var existing = _membership.Get(change.NodeId);
        ClusterMember? updated = null;
        var removed = false;
        string action;
        switch (change.Type)
        {
            case ConfChangeType.AddNode when existing is { IsLearner: true }:
                updated = existing with { IsLearner = false };
                action = "promoted";
                break;
            case ConfChangeType.AddNode when existing is null:
                updated = (context?.Member ?? InitialMember(change.NodeId)) with { IsLearner = false };
                action = "added voter";
                break;
            case ConfChangeType.AddLearnerNode when existing is null:
                updated = (context?.Member ?? InitialMember(change.NodeId)) with { IsLearner = true };
                action = "added learner";
                break;
            case ConfChangeType.RemoveNode when existing is not null:
                removed = true;
                action = "removed";
                break;
            default:
                action = "ignored";
                break;
        }

        using (var txn = store.BeginWrite(entry.Index))
        {
            if (updated is not null)
            {
                txn.PutMeta(ClusterMember.BucketName, ClusterMember.Key(updated.Id), updated.Encode());
            }
            else if (removed)
            {
                txn.DeleteMeta(ClusterMember.BucketName, ClusterMember.Key(change.NodeId));
            }

            txn.Commit();
        }

        if (updated is not null)
        {
            _membership.Set(updated);
            ConnectPeer(updated);
        }
        else if (removed)
        {
            _membership.Remove(change.NodeId);
            if (change.NodeId != _identity.MemberId)
            {
                _transport?.RemovePeer(change.NodeId);
            }
        }

        var name = updated?.Name ?? existing?.Name ?? string.Empty;
        Log.MembershipChanged(_logger, entry.Index, action, EtcdLog.Id(change.NodeId), name, _membership.VoterCount, _membership.Members.Count - _membership.VoterCount);
        LogMemberChange(action, change.NodeId, updated ?? existing);
        // Bootstrap entries (no context) add the initial members one by one; start-up already judged their final count.
        if ((updated is not null || removed) && context is not null)
        {
            WarnIfEven(_membership.VoterCount);
        }

        if (context is not null && context.Proposer == _identity.MemberId)
        {
            _pending.CompleteConfChange(context.RequestId);
        }

        if (removed && change.NodeId == _identity.MemberId)
        {
            Log.RemovedSelf(_logger, EtcdLog.Id(_identity.MemberId), entry.Index);
            _lifetime?.StopApplication();
        }
    }

    /// <summary>etcd's membership line ("added member", "removed member", "promote member") with its field names.</summary>
    private void LogMemberChange(string action, ulong memberId, ClusterMember? member)
    {
        (string Name, object? Value) cluster = ("cluster-id", EtcdLog.Id(_identity.ClusterId));
        (string Name, object? Value) local = ("local-member-id", EtcdLog.Id(_identity.MemberId));
        var urls = member?.PeerUrls.ToArray() ?? [];
        switch (action)
        {
            case "added voter" or "added learner":
                EtcdLog.Info(_logger, "added member", cluster, local, ("added-peer-id", EtcdLog.Id(memberId)), ("added-peer-peer-urls", urls), ("added-peer-is-learner", action == "added learner"));
                break;
            case "removed":
                EtcdLog.Info(_logger, "removed member", cluster, local, ("removed-remote-peer-id", EtcdLog.Id(memberId)), ("removed-remote-peer-urls", urls));
                break;
            case "promoted":
                EtcdLog.Info(_logger, "promote member", cluster, local, ("promoted-member-id", EtcdLog.Id(memberId)));
                break;
        }
    }

    private ClusterMember InitialMember(ulong id)
    {
        lock (_initialMembers)
        {
            if (_initialMembers.Count == 0)
            {
                foreach (var member in InitialMembers())
                {
                    _initialMembers[member.Id] = member;
                }
            }

            return _initialMembers.TryGetValue(id, out var known) ? known : new ClusterMember(id, string.Empty, [], [], false);
        }
    }

    /// <summary>
    /// Every --snapshot-count applied entries, while apply goes on: checkpoint the store (data + consistent index),
    /// holding write txns off only for the checkpoint's version switch; once it is durable, record a raft snapshot
    /// marker at the index it holds, with the membership as of that index (read from the store's member table at the
    /// switch), and drop the log behind it, keeping <see cref="SnapshotCatchUpEntries"/> entries for followers that
    /// are a little behind. The raft log keeps every entry until then, so a crash meanwhile replays them.
    /// </summary>
    private async Task SnapshotAsync(MvccStore store)
    {
        var started = Stopwatch.GetTimestamp();
        var membership = new Membership();
        var index = await store.CheckpointWhileWritingAsync(() => membership.Load(store));
        _metrics.SnapshotSave.Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
        if (index > _raftLog.LastIndex())
        {
            // A leader's snapshot file holds its store as of sending, past the snapshot's index; until the entries in
            // between arrive (and are skipped at apply) there is no log entry to put a marker on. The checkpoint stands,
            // and a restart starts from the installed snapshot's marker as it would have anyway.
            Log.CheckpointAheadOfLog(_logger, index, _raftLog.LastIndex());
            return;
        }

        _raftLog.CreateSnapshot(index, membership.ToConfState());
        await _raftLog.SyncAsync();
        var compactIndex = index > CatchUpEntries ? index - CatchUpEntries : 0;
        if (compactIndex > 0)
        {
            _raftLog.Compact(compactIndex);
        }

        Log.Snapshotted(_logger, index, compactIndex);
    }

    /// <summary>Waits for a --snapshot-count checkpoint still being written; its failure was reported when it failed.</summary>
    private async Task WaitForSnapshotInFlightAsync()
    {
        try
        {
            await _snapshotInFlight;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Reported through Fail by its continuation.
        }
    }

    /// <summary>
    /// Creates the state-machine snapshot for a follower that is behind the leader's log and streams it. The file
    /// reflects the store as of now (at or past the snapshot's index, never before it): the follower skips the entries
    /// it already has through the store's consistent index, as etcd's merged snapshots do.
    /// </summary>
    private async Task SendSnapshotAsync(Message message)
    {
        var peer = message.To;
        try
        {
            var path = await Store.CreateSnapshotFileAsync(_snapshotDirectory);
            var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
            var meta = message.Snapshot?.Metadata ?? new SnapshotMetadata();
            Log.SendingSnapshot(_logger, meta.Index, meta.Term, Store.ConsistentIndex, stream.Length, EtcdLog.Id(peer));
            _transport!.SendSnapshot(message, Peer.SnapshotSource.FromStream(stream));
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException or ObjectDisposedException)
        {
            Log.SnapshotCreateFailed(_logger, EtcdLog.Id(peer), e);
            ReportSnapshot(peer, success: false);
        }
    }

    /// <summary>Raft loop: hands the snapshot to the apply loop (after what is queued before it) and waits.</summary>
    private async Task InstallSnapshotAsync(Snapshot snapshot)
    {
        var index = snapshot.Metadata.Index;
        if (!_receivedSnapshots.Remove(index, out var received))
        {
            throw new InvalidOperationException($"raft asked to install snapshot {index}, but no such snapshot file was received");
        }

        foreach (var stale in _receivedSnapshots.Values)
        {
            TryDelete(stale.FilePath);
        }

        _receivedSnapshots.Clear();
        var install = new SnapshotInstall(snapshot, received.FilePath);
        _applyQueue.Writer.TryWrite(ApplyItem.Of(install));
        await install.Done.Task;
    }

    /// <summary>
    /// Apply loop: installs the snapshot's state into the store in place (the same <see cref="MvccStore"/> instance every
    /// service holds), then records the snapshot in the raft log (durable before the raft loop goes on) and rebuilds
    /// what is derived from the store: the member table and peer transport here, leases and watchers through
    /// <see cref="SnapshotInstalled"/>.
    /// </summary>
    private async Task InstallAsync(SnapshotInstall install)
    {
        try
        {
            var meta = install.Snapshot.Metadata;
            Log.InstallingSnapshot(_logger, meta.Index, meta.Term, install.FilePath);
            var store = Store;
            // The raft log must not record a snapshot of the old state after the installed one.
            await WaitForSnapshotInFlightAsync();
            store.RestoreFrom(install.FilePath);
            _raftLog.ApplySnapshot(install.Snapshot);
            await _raftLog.SyncAsync();

            var before = _membership.Members.Select(m => m.Id).ToHashSet();
            _membership.Load(store);
            foreach (var member in _membership.Members)
            {
                ConnectPeer(member);
                before.Remove(member.Id);
            }

            foreach (var gone in before)
            {
                if (gone != _identity.MemberId)
                {
                    _transport?.RemovePeer(gone);
                }
            }

            _state.AppliedIndex = Math.Max(store.ConsistentIndex, meta.Index);
            _appliedSinceSnapshot = 0;
            SnapshotInstalled?.Invoke(store);
            TryDelete(install.FilePath);
            Log.InstalledSnapshot(_logger, store.ConsistentIndex, store.CurrentRevision);
            _progress.Applied();
            install.Done.TrySetResult();
        }
        catch (Exception e)
        {
            install.Done.TrySetException(e);
            throw;
        }
    }

    /// <summary>
    /// Raised on the apply loop after a snapshot from the leader replaced the store's state (same instance): rebuild
    /// in-memory state derived from the store (leases, watchers). Nothing else is applied while handlers run.
    /// </summary>
    public event Action<MvccStore>? SnapshotInstalled;

    /// <summary>A snapshot to install, queued behind the entries committed before it.</summary>
    private sealed class SnapshotInstall(Snapshot snapshot, string filePath)
    {
        public Snapshot Snapshot { get; } = snapshot;

        public string FilePath { get; } = filePath;

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
