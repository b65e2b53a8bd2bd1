using FluentAssertions;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Node;
using KvStore.Server.Replication;
using Xunit;

namespace KvStore.Server.Tests.Replication;

/// <summary>The requests a member awaits, and the signals it waits on, without a raft loop.</summary>
public sealed class PendingRequestsTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public void A_proposal_is_taken_once_and_a_forgotten_one_is_no_longer_waiting()
    {
        var pending = new PendingRequests();
        var request = new InternalRequest { Id = 5 };
        var proposal = pending.Add(5, request, [1, 2]);
        pending.IsWaiting(5).Should().BeTrue();
        ReferenceEquals(pending.Find(5), proposal).Should().BeTrue();
        proposal.Request.Should().BeSameAs(request);

        pending.TryTake(5, out var taken).Should().BeTrue();
        ReferenceEquals(taken, proposal).Should().BeTrue();
        pending.TryTake(5, out _).Should().BeFalse("an entry applied twice (a retry) answers its caller once");

        pending.Add(6, new InternalRequest { Id = 6 }, []);
        pending.Forget(6);
        pending.IsWaiting(6).Should().BeFalse();
        (pending.Find(6) is null).Should().BeTrue();
    }

    [Fact]
    public async Task A_membership_change_completes_once_and_failing_all_fails_what_still_waits()
    {
        var pending = new PendingRequests();
        var change = pending.AddConfChange(1);
        pending.CompleteConfChange(1).Should().BeTrue();
        await change.Task.WaitAsync(Timeout);
        pending.CompleteConfChange(1).Should().BeFalse();

        var proposal = pending.Add(2, new InternalRequest { Id = 2 }, []);
        var waitingChange = pending.AddConfChange(3);
        pending.FailAll(EtcdErrors.Stopped);

        foreach (var task in new Task[] { proposal.Task, waitingChange.Task })
        {
            var error = await task.Invoking(t => t.WaitAsync(Timeout)).Should().ThrowAsync<RpcException>();
            error.Which.Status.Detail.Should().Be(EtcdErrors.Stopped.Message);
        }

        pending.IsWaiting(2).Should().BeFalse();
    }

    [Fact]
    public async Task Waits_on_progress_end_when_their_condition_holds_or_the_member_stops()
    {
        var state = new NodeState();
        var signals = new ProgressSignals(state);
        var leader = signals.WaitForLeaderAsync(CancellationToken.None);
        var applied = signals.WaitAppliedAsync(3, CancellationToken.None);
        var transferred = signals.WaitForLeaderAsync(2, CancellationToken.None);

        state.LeaderId = 1;
        signals.LeaderChanged();
        await leader.WaitAsync(Timeout);
        transferred.IsCompleted.Should().BeFalse("member 1 leads, not member 2");

        state.AppliedIndex = 2;
        signals.Applied();
        applied.IsCompleted.Should().BeFalse();
        state.AppliedIndex = 3;
        signals.Applied();
        await applied.WaitAsync(Timeout);

        signals.Stop();
        var error = await transferred.Invoking(t => t.WaitAsync(Timeout)).Should().ThrowAsync<RpcException>();
        error.Which.Status.Detail.Should().Be(EtcdErrors.Stopped.Message);
        await signals.Invoking(s => s.WaitAppliedAsync(4, CancellationToken.None)).Should().ThrowAsync<RpcException>();
        await signals.WaitAppliedAsync(3, CancellationToken.None).WaitAsync(Timeout);
    }
}
