using Etcdserverpb;
using static KvStore.Server.Tests.Watch.FakeWatchableStore;
using static KvStore.Server.Tests.Watch.WatchHarness;

namespace KvStore.Server.Tests.Watch;

/// <summary>
/// A watch stream whose client stops reading: the apply thread never waits for it, what the stream holds stays within
/// its bound (responses and bytes), and once it reads again it gets every event in order — or, when the history it
/// still needs was compacted meanwhile, a cancel with the compact revision after the events it did get.
/// </summary>
public sealed class SlowWatcherTests
{
    private const int Writes = 100_000;
    private const long ByteBudget = 256 * 1024;

    [Fact]
    public async Task A_stream_that_stops_reading_while_100000_events_are_written_stays_bounded_then_gets_every_event_in_order()
    {
        using var h = new WatchHarness();
        h.Options.StreamBufferBytes = ByteBudget;
        using var slow = h.Open();
        using var fast = h.Open();
        slow.Session.Create(Create("k/", "k0"));
        fast.Session.Create(Create("k/", "k0"));
        await slow.DrainAsync();
        await fast.DrainAsync();

        var fastRevisions = new List<long>();
        var maxQueuedEvents = 0;
        var maxQueuedBytes = 0L;
        for (var i = 1; i <= Writes; i++)
        {
            h.Commit(Put($"k/{i % 1000:D3}", $"value-{i}"));
            if (i % 500 == 0)
            {
                // The sync loop runs as it would in the background; the fast client keeps up, the slow one never reads.
                h.Hub.SyncOnce();
                fastRevisions.AddRange((await fast.DrainAsync()).SelectMany(r => r.Events).Select(e => e.Kv.ModRevision));
                maxQueuedEvents = Math.Max(maxQueuedEvents, slow.Session.QueuedEvents);
                maxQueuedBytes = Math.Max(maxQueuedBytes, slow.Session.QueuedBytes);
            }
        }

        fastRevisions.Should().Equal(Enumerable.Range(1, Writes).Select(i => (long)i), "a slow stream never holds up the others");
        maxQueuedEvents.Should().BeLessThanOrEqualTo(h.Options.StreamBufferSize);
        maxQueuedBytes.Should().BeLessThan(2 * ByteBudget, "a stream holds at most its byte budget plus one response");
        slow.Session.QueuedBytes.Should().BeGreaterThan(0, "the slow stream filled up");
        h.Hub.Counts.Should().Be((1, 1), "the slow watcher dropped to the unsynced group instead of stalling the apply thread");

        // The client reads again: queued responses first, then the rest from the store, every revision once and in order.
        var slowRevisions = new List<long>();
        for (var pass = 0; pass < 10_000; pass++)
        {
            slowRevisions.AddRange((await slow.DrainAsync()).SelectMany(r => r.Events).Select(e => e.Kv.ModRevision));
            slow.Session.QueuedBytes.Should().BeLessThan(2 * ByteBudget);
            if (h.Hub.SyncOnce() == 0 && slow.Session.QueuedEvents == 0)
            {
                slowRevisions.AddRange((await slow.DrainAsync()).SelectMany(r => r.Events).Select(e => e.Kv.ModRevision));
                break;
            }
        }

        slowRevisions.Should().Equal(Enumerable.Range(1, Writes).Select(i => (long)i), "nothing is lost, duplicated or reordered");
        h.Hub.Counts.Should().Be((2, 0));
        h.Commit(Put("k/new", "live"));
        (await slow.DrainAsync()).Describe().Should().Equal($"PUT k/new=live@{Writes + 1}");
    }

    [Fact]
    public async Task A_slow_watcher_whose_missing_history_was_compacted_gets_what_was_queued_then_a_compacted_cancel()
    {
        using var h = new WatchHarness(bufferSize: 4);
        using var slow = h.Open();
        slow.Session.Create(Create("k"));
        await slow.DrainAsync();
        for (var i = 1; i <= 50; i++)
        {
            h.Commit(Put("k", $"{i}"));
            h.Hub.SyncOnce();
        }

        h.Store.Compact(40);
        var responses = new List<WatchResponse>();
        for (var pass = 0; pass < 100 && !responses.Any(r => r.Canceled); pass++)
        {
            responses.AddRange(await slow.DrainAsync());
            h.Hub.SyncOnce();
        }

        responses.AddRange(await slow.DrainAsync());
        responses.SelectMany(r => r.Events).Select(e => e.Kv.ModRevision).Should().Equal([1L, 2, 3, 4], "the 4 queued responses, no gap");
        var cancel = responses.Should().ContainSingle(r => r.Canceled).Which;
        (cancel.WatchId, cancel.CompactRevision).Should().Be((0L, 40L));
        responses[^1].Should().BeSameAs(cancel, "nothing follows the cancel");
        h.Hub.Counts.Should().Be((0, 0));
    }

    [Fact]
    public async Task Progress_notifications_stop_piling_up_on_a_stream_that_does_not_read()
    {
        using var h = new WatchHarness(bufferSize: 8);
        using var c = h.Open();
        c.Session.Create(Create("quiet", progressNotify: true));
        for (var tick = 0; tick < 100; tick++)
        {
            c.Session.ProgressTick();
        }

        c.Session.QueuedControls.Should().BeLessThanOrEqualTo(8 + 1, "the created response plus at most a buffer's worth of progress");
        var written = await c.DrainAsync();
        written.Count(r => r.Events.Count == 0 && !r.Created).Should().BeInRange(1, 8);
        c.Session.QueuedControls.Should().Be(0);
    }
}
