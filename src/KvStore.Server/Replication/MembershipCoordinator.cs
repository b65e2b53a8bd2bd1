using KvStore.Internal;
using KvStore.Raft;
using KvStore.Server.Identity;
using KvStore.Server.Node;
using KvStore.Server.Options;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Replication;

/// <summary>What the membership coordinator needs of the raft loop.</summary>
internal interface IRaftLoop
{
    /// <summary>Runs <paramref name="action"/> on the raft loop, with the node, and returns its result.</summary>
    Task<RequestResult> RunAsync(Func<RaftNode, RequestResult> action, CancellationToken cancellationToken);

    /// <summary>A request id unique across members and restarts.</summary>
    ulong NextRequestId();

    /// <summary>Throws etcd's "server stopped" once the member stops taking requests.</summary>
    void ThrowIfStopped();
}

/// <summary>
/// Membership changes and leadership transfer (etcd's Cluster service and MoveLeader), and the publication of this
/// member's name and client URLs. Changes go through the log as raft conf changes (or, for URLs, ordinary entries), and
/// each call returns once its change is applied on this member; the member table itself is updated by the apply loop.
/// </summary>
public sealed class MembershipCoordinator
{
    /// <summary>Learners etcd allows at once.</summary>
    public const int MaxLearners = 1;

    /// <summary>A learner may be promoted once it has this share of the leader's log (etcd: 90%).</summary>
    public const double PromoteReadyRatio = 0.9;

    /// <summary>The raft loop's result code for a promotion refused because the learner is behind.</summary>
    private const RequestResult PromoteNotReady = (RequestResult)1000;

    private readonly ServerOptions _options;
    private readonly MemberIdentity _identity;
    private readonly Membership _membership;
    private readonly NodeState _state;
    private readonly PendingRequests _pending;
    private readonly ProgressSignals _progress;
    private readonly IProposer _proposer;
    private readonly IRaftLoop _loop;
    private readonly TimeSpan _requestTimeout;
    private readonly ILogger _logger;

    internal MembershipCoordinator(
        ServerOptions options,
        MemberIdentity identity,
        Membership membership,
        NodeState state,
        PendingRequests pending,
        ProgressSignals progress,
        IProposer proposer,
        IRaftLoop loop,
        TimeSpan requestTimeout,
        ILogger logger)
    {
        _options = options;
        _identity = identity;
        _membership = membership;
        _state = state;
        _pending = pending;
        _progress = progress;
        _proposer = proposer;
        _loop = loop;
        _requestTimeout = requestTimeout;
        _logger = logger;
    }

    /// <summary>The member table as of the applied index.</summary>
    public Membership Membership => _membership;

    /// <summary>True while this member is a learner in the applied member table.</summary>
    public bool IsLearner => _membership.Get(_identity.MemberId)?.IsLearner ?? false;

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
        await _proposer.ProposeAsync(request, cancellationToken);
    }

    /// <summary>
    /// Hands leadership to voter <paramref name="target"/> and waits until it leads (etcd's MoveLeader): only the leader
    /// may do it; the target must be a voting member.
    /// </summary>
    public async Task MoveLeaderAsync(ulong target, CancellationToken cancellationToken)
    {
        if (_state.LeaderId != _identity.MemberId)
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
        var result = await _loop.RunAsync(node => node.TransferLeadership(target), timeout.Token);
        if (result is RequestResult.InvalidConfChange)
        {
            throw EtcdErrors.BadLeaderTransferee.Exception();
        }

        try
        {
            await _progress.WaitForLeaderAsync(target, timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw ClusterErrors.TimeoutLeaderTransfer.Exception();
        }
    }

    /// <summary>
    /// Publishes this member's name and client URLs through the log once a leader is known (etcd's publish), so every
    /// member's MemberList shows them. Retried until it succeeds or the member stops.
    /// </summary>
    internal async Task PublishAsync(CancellationToken stopping)
    {
        var request = new MemberAttributesRequest { MemberId = _identity.MemberId, Name = _identity.Name, UpdateNameAndClientUrls = true };
        request.ClientUrls.AddRange(_identity.ClientUrls);
        while (!stopping.IsCancellationRequested && !_progress.IsStopped)
        {
            try
            {
                await _progress.WaitForLeaderAsync(stopping);
                var current = _membership.Get(_identity.MemberId);
                if (current is not null && current.Name == _identity.Name && current.ClientUrls.SequenceEqual(_identity.ClientUrls))
                {
                    return;
                }

                if (current is null)
                {
                    // Not in the table yet (joining member before its add is applied here): wait for some progress.
                    await _progress.WaitAppliedAsync(_state.AppliedIndex + 1, stopping);
                    continue;
                }

                await _proposer.ProposeAsync(new InternalRequest { MemberAttributes = request.Clone() }, stopping);
                EtcdLog.Info(
                    _logger,
                    "published local member to cluster through raft",
                    ("local-member-id", EtcdLog.Id(_identity.MemberId)),
                    ("local-member-attributes", $"{{Name:{_identity.Name} ClientURLs:[{string.Join(' ', _identity.ClientUrls)}]}}"),
                    ("cluster-id", EtcdLog.Id(_identity.ClusterId)));
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

    private async Task ChangeMembershipAsync(ConfChange change, ClusterMember? member, ulong? promote, CancellationToken cancellationToken)
    {
        _loop.ThrowIfStopped();
        var requestId = _loop.NextRequestId();
        var context = new ConfChangeContext(_identity.MemberId, requestId, member).Encode();
        var withContext = new ConfChange { Type = change.Type, NodeId = change.NodeId, Context = context };
        var waiter = _pending.AddConfChange(requestId);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_requestTimeout);
        try
        {
            while (true)
            {
                var result = await _loop.RunAsync(node => ProposeChange(node, withContext, promote), timeout.Token);
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
            _pending.ForgetConfChange(requestId);
        }
    }

    /// <summary>Raft loop: proposes <paramref name="change"/>, after checking that a learner to promote is in sync.</summary>
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

}
