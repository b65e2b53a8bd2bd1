using KvStore.Internal;
using KvStore.Raft;
using KvStore.Server.Hosting;
using KvStore.Server.Identity;

namespace KvStore.Server.Replication;

/// <summary>Membership changes and leadership transfer (etcd's Cluster service and MoveLeader).</summary>
public sealed partial class RaftHost
{
    /// <summary>Learners etcd allows at once.</summary>
    public const int MaxLearners = 1;

    /// <summary>A learner may be promoted once it has this share of the leader's log (etcd: 90%).</summary>
    public const double PromoteReadyRatio = 0.9;

    /// <summary>
    /// Adds a member with <paramref name="peerUrls"/> (a voter, or a learner) through a raft conf change and returns it
    /// once the change is applied here. Its id mixes the time of the addition into etcd's derivation (peer URLs + cluster
    /// token), so a re-added member never reuses a removed id; the new member learns it from the peers when it joins with
    /// --initial-cluster-state existing (ClusterBootstrap).
    /// </summary>
    public async Task<ClusterMember> AddMemberAsync(IReadOnlyList<string> peerUrls, bool isLearner, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(peerUrls);
        var urls = peerUrls.Order(StringComparer.Ordinal).ToArray();
        var id = MemberIdentity.ComputeMemberId(urls, _options.InitialClusterToken, DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        var members = _membership.Members;
        if (members.Any(m => m.Id == id))
        {
            throw EtcdErrors.MemberExist.Exception();
        }

        if (members.Any(m => m.PeerUrls.Intersect(urls, StringComparer.Ordinal).Any()))
        {
            throw EtcdErrors.PeerUrlExist.Exception();
        }

        var learners = members.Where(m => m.IsLearner).ToList();
        if (isLearner && learners.Count >= MaxLearners)
        {
            throw EtcdErrors.TooManyLearners.Exception();
        }

        var member = new ClusterMember(id, string.Empty, urls, [], isLearner);
        await ChangeMembershipAsync(new ConfChange { Type = isLearner ? ConfChangeType.AddLearnerNode : ConfChangeType.AddNode, NodeId = id }, member, null, cancellationToken);
        return _membership.Get(id) ?? member;
    }

    /// <summary>Removes member <paramref name="id"/> once the change is applied here.</summary>
    public Task RemoveMemberAsync(ulong id, CancellationToken cancellationToken)
    {
        if (_membership.Get(id) is null)
        {
            throw EtcdErrors.MemberNotFound.Exception();
        }

        return ChangeMembershipAsync(new ConfChange { Type = ConfChangeType.RemoveNode, NodeId = id }, null, null, cancellationToken);
    }

    /// <summary>Promotes learner <paramref name="id"/> to voter, refused while it is not in sync with the leader.</summary>
    public Task PromoteMemberAsync(ulong id, CancellationToken cancellationToken)
    {
        var member = _membership.Get(id) ?? throw EtcdErrors.MemberNotFound.Exception();
        if (!member.IsLearner)
        {
            throw EtcdErrors.MemberNotLearner.Exception();
        }

        // The leader checks the learner's progress inside the raft loop (only the leader tracks it).
        return ChangeMembershipAsync(new ConfChange { Type = ConfChangeType.AddNode, NodeId = id }, null, id, cancellationToken);
    }

    /// <summary>Changes the peer URLs of member <paramref name="id"/> (an ordinary entry, applied on every member).</summary>
    public async Task UpdateMemberAsync(ulong id, IReadOnlyList<string> peerUrls, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(peerUrls);
        if (_membership.Get(id) is null)
        {
            throw EtcdErrors.MemberNotFound.Exception();
        }

        var urls = peerUrls.Order(StringComparer.Ordinal).ToArray();
        if (_membership.Members.Any(m => m.Id != id && m.PeerUrls.Intersect(urls, StringComparer.Ordinal).Any()))
        {
            throw EtcdErrors.PeerUrlExist.Exception();
        }

        var request = new InternalRequest { MemberAttributes = new MemberAttributesRequest { MemberId = id, UpdatePeerUrls = true } };
        request.MemberAttributes.PeerUrls.AddRange(urls);
        await ProposeAsync(request, cancellationToken);
    }

    /// <summary>
    /// Hands leadership to voter <paramref name="target"/> and waits until it leads (etcd's MoveLeader): only the leader
    /// may do it; the target must be a voting member.
    /// </summary>
    public async Task MoveLeaderAsync(ulong target, CancellationToken cancellationToken)
    {
        if (!IsLeader)
        {
            throw EtcdErrors.NotLeader.Exception();
        }

        var member = _membership.Get(target);
        if (member is null || member.IsLearner)
        {
            throw EtcdErrors.BadLeaderTransferee.Exception();
        }

        if (target == _identity.MemberId)
        {
            return;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_requestTimeout);
        var control = new ControlRequest(node => node.TransferLeadership(target));
        _inbox.Writer.TryWrite(InboxItem.Of(control));
        var result = await control.Result.Task.WaitAsync(timeout.Token);
        if (result is RequestResult.InvalidConfChange)
        {
            throw EtcdErrors.BadLeaderTransferee.Exception();
        }

        try
        {
            while (_state.LeaderId != target)
            {
                var signal = Volatile.Read(ref _leaderSignal);
                if (_state.LeaderId == target)
                {
                    break;
                }

                await signal.Task.WaitAsync(timeout.Token);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw ClusterErrors.TimeoutLeaderTransfer.Exception();
        }
    }

    private async Task ChangeMembershipAsync(ConfChange change, ClusterMember? member, ulong? promote, CancellationToken cancellationToken)
    {
        ThrowIfStopped();
        var requestId = NextId();
        var context = new ConfChangeContext(_identity.MemberId, requestId, member).Encode();
        var withContext = new ConfChange { Type = change.Type, NodeId = change.NodeId, Context = context };
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _confWaiters[requestId] = waiter;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_requestTimeout);
        try
        {
            while (true)
            {
                var control = new ControlRequest(node => ProposeChange(node, withContext, promote));
                _inbox.Writer.TryWrite(InboxItem.Of(control));
                var result = await control.Result.Task.WaitAsync(timeout.Token);
                switch (result)
                {
                    case RequestResult.Accepted or RequestResult.Forwarded:
                        await waiter.Task.WaitAsync(timeout.Token);
                        return;
                    case RequestResult.ConfChangePending or RequestResult.LeaderTransferInProgress or RequestResult.NoLeader:
                        // etcd serializes configuration changes; wait for the previous one (or a leader) and retry.
                        await Task.Delay(TimeSpan.FromMilliseconds(_options.HeartbeatIntervalMs), timeout.Token);
                        continue;
                    case PromoteNotReady:
                        throw EtcdErrors.LearnerNotReady.Exception();
                    default:
                        throw EtcdErrors.MemberNotFound.Exception();
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw (_state.HasLeader ? EtcdErrors.Timeout : ClusterErrors.TimeoutLeaderFail).Exception();
        }
        finally
        {
            _confWaiters.TryRemove(requestId, out _);
        }
    }

    /// <summary>Raft loop: the result code for a promotion refused because the learner is behind.</summary>
    private const RequestResult PromoteNotReady = (RequestResult)1000;

    private static RequestResult ProposeChange(RaftNode node, ConfChange change, ulong? promote)
    {
        if (promote is { } learner)
        {
            if (node.Role != RaftRole.Leader)
            {
                // Only the leader knows the learner's progress; a follower cannot vouch for it.
                return node.Leader == 0 ? RequestResult.NoLeader : PromoteNotReady;
            }

            var leaderIndex = node.LastIndex;
            var learnerIndex = node.ReplicatedIndexOf(learner);
            if (learnerIndex < leaderIndex * PromoteReadyRatio)
            {
                return PromoteNotReady;
            }
        }

        return node.ProposeConfChange(change);
    }

    private static void RunControl(RaftNode node, ControlRequest control)
    {
        var result = control.Action(node);
        control.Result.TrySetResult(result);
    }

    /// <summary>
    /// Publishes this member's name and client URLs through the log once a leader is known (etcd's publish), so every
    /// member's MemberList shows them. Retried until it succeeds or the member stops.
    /// </summary>
    private async Task PublishAsync()
    {
        var request = new MemberAttributesRequest { MemberId = _identity.MemberId, Name = _identity.Name, UpdateNameAndClientUrls = true };
        request.ClientUrls.AddRange(_identity.ClientUrls);
        while (!_stopping && !_failed)
        {
            try
            {
                await WaitForLeaderAsync(_stop.Token);
                var current = _membership.Get(_identity.MemberId);
                if (current is not null && current.Name == _identity.Name && current.ClientUrls.SequenceEqual(_identity.ClientUrls))
                {
                    return;
                }

                if (current is null)
                {
                    // Not in the table yet (joining member before its add is applied here): wait for some progress.
                    await WaitAppliedAsync(_state.AppliedIndex + 1, _stop.Token);
                    continue;
                }

                await ProposeAsync(new InternalRequest { MemberAttributes = request.Clone() }, _stop.Token);
                EtcdLog.Info(
                    _logger,
                    "published local member to cluster through raft",
                    ("local-member-id", Hex(_identity.MemberId)),
                    ("local-member-attributes", $"{{Name:{_identity.Name} ClientURLs:[{string.Join(' ', _identity.ClientUrls)}]}}"),
                    ("cluster-id", Hex(_identity.ClusterId)));
                return;
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Grpc.Core.RpcException)
            {
                // no leader / timeout: try again
            }
        }
    }

    /// <summary>Work run on the raft loop with the node (conf changes, transfers).</summary>
    private sealed class ControlRequest(Func<RaftNode, RequestResult> action)
    {
        public Func<RaftNode, RequestResult> Action { get; } = action;

        public TaskCompletionSource<RequestResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
