using System.Threading.Channels;
using Etcdserverpb;

namespace KvStore.Server.Tests.Watch;

/// <summary>
/// The send loops of many streams share the hub's send pump: a stream whose write has to wait must not hold up the
/// others, the loop must not return while a write of it is under way, and a failed write must end its loop.
/// </summary>
public sealed class WatchSendPumpTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_stream_whose_write_waits_does_not_hold_up_the_other_streams()
    {
        using var harness = new WatchHarness();
        using var stop = new CancellationTokenSource();
        var blocked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slowWrites = 0;
        using var slow = harness.Open();
        slow.Session.Create(WatchHarness.Create("k"));
        var slowLoop = slow.Session.RunSendLoopAsync(
            async _ =>
            {
                Interlocked.Increment(ref slowWrites);
                await blocked.Task;
            },
            Header,
            stop.Token);

        var fast = new List<(WatchClient Client, Channel<WatchResponse> Written, Task Loop)>();
        for (var i = 0; i < 20; i++)
        {
            var client = harness.Open();
            var written = Channel.CreateUnbounded<WatchResponse>();
            client.Session.Create(WatchHarness.Create("k"));
            fast.Add((client, written, client.Session.RunSendLoopAsync(r => written.Writer.WriteAsync(r).AsTask(), Header, stop.Token)));
        }

        var first = harness.Store.CurrentRevision + 1;
        for (var i = 0; i < 5; i++)
        {
            harness.Commit(("k", $"v{i}"));
        }

        // Every fast stream gets its created response and all five events while the slow one is stuck on its first write.
        foreach (var (_, written, _) in fast)
        {
            var events = new List<long>();
            using var timeout = new CancellationTokenSource(Bound);
            while (events.Count < 5)
            {
                var response = await written.Reader.ReadAsync(timeout.Token);
                events.AddRange(response.Events.Select(e => e.Kv.ModRevision));
            }

            events.Should().Equal(Enumerable.Range(0, 5).Select(i => first + i));
        }

        Volatile.Read(ref slowWrites).Should().Be(1, "the slow stream is still on its first write");
        blocked.SetResult();
        await stop.CancelAsync();
        await FluentActions.Awaiting(() => slowLoop).Should().ThrowAsync<OperationCanceledException>();
        foreach (var (client, _, loop) in fast)
        {
            await FluentActions.Awaiting(() => loop).Should().ThrowAsync<OperationCanceledException>();
            client.Dispose();
        }
    }

    [Fact]
    public async Task The_loop_returns_only_after_the_write_under_way_has_finished()
    {
        using var harness = new WatchHarness();
        using var stop = new CancellationTokenSource();
        var writing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var finished = 0;
        using var client = harness.Open();
        client.Session.Create(WatchHarness.Create("k"));
        var loop = client.Session.RunSendLoopAsync(
            async _ =>
            {
                writing.TrySetResult();
                await release.Task;
                Interlocked.Increment(ref finished);
            },
            Header,
            stop.Token);

        await writing.Task.WaitAsync(Bound);
        await stop.CancelAsync();
        // A loop that returned at the cancellation would be done well within this bound.
        (await Task.WhenAny(loop, Task.Delay(TimeSpan.FromMilliseconds(200)))).Should().NotBeSameAs(loop, "the created response is still being written");
        release.SetResult();
        await FluentActions.Awaiting(() => loop).Should().ThrowAsync<OperationCanceledException>();
        Volatile.Read(ref finished).Should().Be(1);
    }

    [Fact]
    public async Task A_failed_write_ends_the_loop_with_its_error_and_nothing_more_is_written()
    {
        using var harness = new WatchHarness();
        var writes = 0;
        using var client = harness.Open();
        client.Session.Create(WatchHarness.Create("k"));
        var loop = client.Session.RunSendLoopAsync(
            _ =>
            {
                Interlocked.Increment(ref writes);
                throw new IOException("the client went away");
            },
            Header,
            CancellationToken.None);

        await FluentActions.Awaiting(() => loop.WaitAsync(Bound)).Should().ThrowAsync<IOException>().WithMessage("the client went away");
        harness.Commit(("k", "v"));
        harness.Commit(("k", "w"));
        Volatile.Read(ref writes).Should().Be(1);
    }

    [Fact]
    public async Task Disposing_the_stream_ends_its_loop()
    {
        using var harness = new WatchHarness();
        var client = harness.Open();
        var loop = client.Session.RunSendLoopAsync(_ => Task.CompletedTask, Header, CancellationToken.None);
        client.Dispose();
        await loop.WaitAsync(Bound);
        loop.IsCompletedSuccessfully.Should().BeTrue();
    }

    private static ResponseHeader Header(long revision) => new() { Revision = revision };
}
