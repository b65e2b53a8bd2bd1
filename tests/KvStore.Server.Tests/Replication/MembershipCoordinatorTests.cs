using FluentAssertions;
using Google.Protobuf;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Raft;
using KvStore.Server.Identity;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace KvStore.Server.Tests.Replication;

/// <summary>
/// Membership changes and leadership transfer against a fake raft loop and proposer: the checks a call makes before
/// anything reaches Raft (etcd's errors), and how it waits for the change to be applied.
/// </summary>
public sealed class MembershipCoordinatorTests
{
    private const ulong Self = 0x1111;
    private const ulong Voter = 0x2222;
    private const ulong Learner = 0x3333;
    private const ulong RequestId = 42;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly NodeState _state = new();
    private readonly Membership _membership = new();
    private readonly PendingRequests _pending = new();
    private readonly ProgressSignals _progress;
    private readonly FakeLoop _loop;
    private readonly FakeProposer _proposer = new();
    private readonly MembershipCoordinator _members;

    public MembershipCoordinatorTests()
    {
        _progress = new ProgressSignals(_state);
        _loop = new FakeLoop(_pending);
        _membership.Set(new ClusterMember(Self, "m0", ["http://127.0.0.1:2380"], [], false));
        _membership.Set(new ClusterMember(Voter, "m1", ["http://127.0.0.1:2382"], [], false));
        _members = new MembershipCoordinator(
            new ServerOptions { HeartbeatIntervalMs = 10 },
            new MemberIdentity(Self, 0x9999, "m0", ["http://127.0.0.1:2380"], ["http://127.0.0.1:2379"]),
            _membership,
            _state,
            _pending,
            _progress,
            _proposer,
            _loop,
            TimeSpan.FromSeconds(20),
            NullLogger.Instance);
    }

    [Fact]
    public async Task Adding_a_member_is_refused_before_raft_when_its_URLs_are_taken_or_a_learner_exists()
    {
        await ExpectError(() => _members.AddMemberAsync(["http://127.0.0.1:2382"], isLearner: false, CancellationToken.None), EtcdErrors.PeerUrlExist);

        _membership.Set(new ClusterMember(Learner, "m2", ["http://127.0.0.1:2384"], [], true));
        await ExpectError(() => _members.AddMemberAsync(["http://127.0.0.1:2386"], isLearner: true, CancellationToken.None), EtcdErrors.TooManyLearners);
        _loop.Runs.Should().Be(0);
    }

    [Fact]
    public async Task A_change_the_leader_defers_is_proposed_again_and_returns_once_applied_here()
    {
        _loop.Results.Enqueue(RequestResult.ConfChangePending);
        _loop.Results.Enqueue(RequestResult.NoLeader);
        _loop.Results.Enqueue(RequestResult.Accepted);

        var added = await _members.AddMemberAsync(["http://127.0.0.1:2390", "http://127.0.0.1:2388"], isLearner: true, CancellationToken.None).WaitAsync(Timeout);

        _loop.Runs.Should().Be(3);
        added.IsLearner.Should().BeTrue();
        added.PeerUrls.Should().Equal("http://127.0.0.1:2388", "http://127.0.0.1:2390");
        _pending.CompleteConfChange(RequestId).Should().BeFalse("the waiter is gone once the call returned");
    }

    [Fact]
    public async Task A_change_raft_rejects_fails_with_member_not_found_and_leaves_no_waiter()
    {
        _loop.Results.Enqueue(RequestResult.InvalidConfChange);
        await ExpectError(() => _members.RemoveMemberAsync(Voter, CancellationToken.None), EtcdErrors.MemberNotFound);
        _pending.CompleteConfChange(RequestId).Should().BeFalse();

        await ExpectError(() => _members.RemoveMemberAsync(0x4444, CancellationToken.None), EtcdErrors.MemberNotFound);
        await ExpectError(() => _members.PromoteMemberAsync(Voter, CancellationToken.None), EtcdErrors.MemberNotLearner);
    }

    [Fact]
    public async Task Updating_peer_URLs_proposes_them_sorted_and_refuses_another_members_URL()
    {
        await ExpectError(() => _members.UpdateMemberAsync(Voter, ["http://127.0.0.1:2380"], CancellationToken.None), EtcdErrors.PeerUrlExist);
        _proposer.Proposed.Should().BeEmpty();

        await _members.UpdateMemberAsync(Voter, ["http://127.0.0.1:2399", "http://127.0.0.1:2392"], CancellationToken.None);
        var proposed = _proposer.Proposed.Should().ContainSingle().Which.MemberAttributes;
        proposed.MemberId.Should().Be(Voter);
        proposed.UpdatePeerUrls.Should().BeTrue();
        proposed.PeerUrls.Should().Equal("http://127.0.0.1:2392", "http://127.0.0.1:2399");
    }

    [Fact]
    public async Task Moving_the_leader_needs_the_leader_and_a_voter_and_returns_once_the_target_leads()
    {
        await ExpectError(() => _members.MoveLeaderAsync(Voter, CancellationToken.None), EtcdErrors.NotLeader);

        _state.LeaderId = Self;
        _membership.Set(new ClusterMember(Learner, "m2", ["http://127.0.0.1:2384"], [], true));
        await ExpectError(() => _members.MoveLeaderAsync(Learner, CancellationToken.None), EtcdErrors.BadLeaderTransferee);

        _loop.Results.Enqueue(RequestResult.Accepted);
        var moving = _members.MoveLeaderAsync(Voter, CancellationToken.None);
        await _loop.Ran.Task.WaitAsync(Timeout);
        moving.IsCompleted.Should().BeFalse("member 1 does not lead yet");

        _state.LeaderId = Voter;
        _progress.LeaderChanged();
        await moving.WaitAsync(Timeout);
    }

    private static async Task ExpectError(Func<Task> call, EtcdError error)
    {
        var thrown = await call.Should().ThrowAsync<RpcException>();
        thrown.Which.Status.StatusCode.Should().Be(error.Code);
        thrown.Which.Status.Detail.Should().Be(error.Message);
    }

    /// <summary>Answers each run with the next queued result; an accepted conf change is applied at once.</summary>
    private sealed class FakeLoop(PendingRequests pending) : IRaftLoop
    {
        public Queue<RequestResult> Results { get; } = new();

        public int Runs { get; private set; }

        public TaskCompletionSource Ran { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<RequestResult> RunAsync(Func<RaftNode, RequestResult> action, CancellationToken cancellationToken)
        {
            Runs++;
            var result = Results.Dequeue();
            if (result == RequestResult.Accepted)
            {
                pending.CompleteConfChange(RequestId);
            }

            Ran.TrySetResult();
            return Task.FromResult(result);
        }

        public ulong NextRequestId() => RequestId;

        public void ThrowIfStopped()
        {
        }
    }

    private sealed class FakeProposer : IProposer
    {
        public List<InternalRequest> Proposed { get; } = [];

        public Task<IMessage> ProposeAsync(InternalRequest request, CancellationToken cancellationToken)
        {
            Proposed.Add(request);
            return Task.FromResult<IMessage>(new Etcdserverpb.MemberUpdateResponse());
        }
    }
}
