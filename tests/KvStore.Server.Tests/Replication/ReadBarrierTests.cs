using System.Buffers.Binary;
using FluentAssertions;
using Grpc.Core;
using KvStore.Raft;
using KvStore.Server.Node;
using KvStore.Server.Replication;
using Xunit;

namespace KvStore.Server.Tests.Replication;

/// <summary>
/// The read barrier on its own, with the raft loop's side played by the test: which ReadIndex requests it sends, when
/// it sends them again, and when its readers are let through.
/// </summary>
public sealed class ReadBarrierTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly NodeState _state = new();
    private readonly ProgressSignals _progress;
    private readonly List<ulong> _sent = [];
    private int _issueRequests;

    public ReadBarrierTests() => _progress = new ProgressSignals(_state);

    [Fact]
    public async Task Concurrent_readers_share_one_ReadIndex_and_pass_once_its_index_is_applied()
    {
        var barrier = NewBarrier(TimeSpan.FromMinutes(1));
        var first = barrier.WaitAsync(CancellationToken.None);
        var second = barrier.WaitAsync(CancellationToken.None);
        _issueRequests.Should().Be(1, "only the reader that opens a batch asks the raft loop to send it");

        barrier.IssuePending(Send, ticks: 0);
        barrier.IssuePending(Send, ticks: 0);
        _sent.Should().ContainSingle();
        barrier.InFlight.Should().Be(1);

        barrier.Complete([new ReadState(7, Context(_sent[0]))]);
        barrier.InFlight.Should().Be(0);
        first.IsCompleted.Should().BeFalse("the member has not applied index 7 yet");

        _state.AppliedIndex = 7;
        _progress.Applied();
        await Task.WhenAll(first, second).WaitAsync(Timeout);
    }

    [Fact]
    public async Task A_reader_after_a_sent_batch_opens_the_next_batch()
    {
        var barrier = NewBarrier(TimeSpan.FromMinutes(1));
        var first = barrier.WaitAsync(CancellationToken.None);
        barrier.IssuePending(Send, ticks: 0);
        var second = barrier.WaitAsync(CancellationToken.None);
        _issueRequests.Should().Be(2);
        barrier.IssuePending(Send, ticks: 0);
        _sent.Should().HaveCount(2).And.OnlyHaveUniqueItems();

        // Answered out of order: each answer lets through its own batch only.
        _state.AppliedIndex = 10;
        barrier.Complete([new ReadState(5, Context(_sent[1]))]);
        await second.WaitAsync(Timeout);
        first.IsCompleted.Should().BeFalse();
        barrier.Complete([new ReadState(4, Context(_sent[0]))]);
        await first.WaitAsync(Timeout);
    }

    [Fact]
    public void Unanswered_batches_are_sent_again_every_retry_period_and_to_a_new_leader()
    {
        var barrier = NewBarrier(TimeSpan.FromMinutes(1));
        _ = barrier.WaitAsync(CancellationToken.None);
        barrier.IssuePending(Send, ticks: 100);

        barrier.OnTick(Send, 100 + ReadBarrier.RetryTicks - 1);
        _sent.Should().HaveCount(1);
        barrier.OnTick(Send, 100 + ReadBarrier.RetryTicks);
        _sent.Should().HaveCount(2);
        _sent.Should().AllBeEquivalentTo(_sent[0], "a retry asks for the same batch");

        barrier.OnNewLeader(Send, 106);
        _sent.Should().HaveCount(3);

        // Long after its readers gave up, the batch is dropped instead of being asked for forever.
        barrier.OnTick(Send, 106 + ReadBarrier.AbandonTicks + 1);
        barrier.InFlight.Should().Be(0);
        _sent.Should().HaveCount(3);
    }

    [Fact]
    public async Task A_read_that_gets_no_index_in_time_fails_as_etcd_does_without_a_leader()
    {
        var barrier = NewBarrier(TimeSpan.FromMilliseconds(50));
        var read = barrier.WaitAsync(CancellationToken.None);
        barrier.IssuePending(Send, ticks: 0);

        var error = await read.Invoking(r => r.WaitAsync(Timeout)).Should().ThrowAsync<RpcException>();
        error.Which.Status.Detail.Should().Be(ClusterErrors.TimeoutLeaderFail.Message);
    }

    [Fact]
    public async Task A_read_whose_index_is_not_applied_in_time_fails_with_etcds_applied_index_timeout()
    {
        // The same timeout bounds the wait for the index, which the read must pass: long enough that a busy thread pool
        // cannot fire it before the index already given reaches the read (200 ms did, once, under the full suite).
        var barrier = NewBarrier(TimeSpan.FromSeconds(2));
        _state.LeaderId = 1;
        var read = barrier.WaitAsync(CancellationToken.None);
        barrier.IssuePending(Send, ticks: 0);
        barrier.Complete([new ReadState(3, Context(_sent[0]))]);

        var error = await read.Invoking(r => r.WaitAsync(Timeout)).Should().ThrowAsync<RpcException>();
        error.Which.Status.Detail.Should().Be(EtcdErrors.TimeoutWaitAppliedIndex.Message);
    }

    [Fact]
    public async Task Stopping_fails_the_batch_not_yet_sent_and_the_readers_waiting_to_apply()
    {
        var barrier = NewBarrier(TimeSpan.FromMinutes(1));
        var applying = barrier.WaitAsync(CancellationToken.None);
        barrier.IssuePending(Send, ticks: 0);
        barrier.Complete([new ReadState(9, Context(_sent[0]))]);
        var unsent = barrier.WaitAsync(CancellationToken.None);

        barrier.FailPending(EtcdErrors.Stopped);
        _progress.Stop();

        foreach (var read in new[] { unsent, applying })
        {
            var error = await read.Invoking(r => r.WaitAsync(Timeout)).Should().ThrowAsync<RpcException>();
            error.Which.Status.Detail.Should().Be(EtcdErrors.Stopped.Message);
        }
    }

    private ReadBarrier NewBarrier(TimeSpan requestTimeout) =>
        new(_state, _progress, requestTimeout, () => _issueRequests++);

    private void Send(ReadOnlyMemory<byte> context) => _sent.Add(BinaryPrimitives.ReadUInt64BigEndian(context.Span));

    private static byte[] Context(ulong value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        return bytes;
    }
}
