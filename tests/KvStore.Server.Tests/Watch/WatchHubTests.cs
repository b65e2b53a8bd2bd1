using Etcdserverpb;
using static KvStore.Server.Tests.Watch.FakeWatchableStore;
using static KvStore.Server.Tests.Watch.WatchHarness;
using FilterType = Etcdserverpb.WatchCreateRequest.Types.FilterType;

namespace KvStore.Server.Tests.Watch;

public sealed class WatchHubTests
{
    [Fact]
    public async Task Created_response_carries_the_assigned_id_and_current_revision_then_live_events_follow()
    {
        using var h = new WatchHarness();
        h.Commit(Put("a", "1"));
        using var c = h.Open();

        c.Session.Create(Create("k"));
        c.Session.Create(Create("p/", "p0"));
        var created = await c.DrainAsync();
        created.Select(r => (r.WatchId, r.Created, r.Canceled, r.Header.Revision)).Should().Equal((0L, true, false, 1L), (1L, true, false, 1L));

        h.Commit(Put("k", "v"));
        h.Commit(Put("p/x", "1"), Put("q", "2"), Put("p/y", "3"));
        h.Commit(Del("k"));
        var live = await c.DrainAsync();

        live.Select(r => (r.WatchId, r.Header.Revision, r.Events.Count)).Should().Equal((0L, 2L, 1), (1L, 3L, 2), (0L, 4L, 1));
        live.Describe().Should().Equal("PUT k=v@2", "PUT p/x=1@3", "PUT p/y=3@3", "DELETE k@4");
        h.Hub.Counts.Should().Be((2, 0));
    }

    [Fact]
    public async Task Empty_key_with_range_end_zero_watches_every_key()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("", "\0"));
        h.Commit(Put("a", "1"));
        h.Commit(Put("\u0001", "2"));
        (await c.DrainAsync()).Describe().Should().Equal("PUT a=1@1", "PUT \u0001=2@2");
    }

    [Fact]
    public async Task History_is_replayed_in_one_response_from_the_start_revision_then_the_watcher_joins_synced()
    {
        using var h = new WatchHarness();
        h.Commit(Put("k", "a"));
        h.Commit(Put("k", "b"));
        h.Commit(Del("k"));
        using var c = h.Open();

        c.Session.Create(Create("k", startRevision: 2));
        h.Hub.Counts.Should().Be((0, 1));
        h.Hub.SyncOnce().Should().Be(0);
        h.Hub.Counts.Should().Be((1, 0));
        h.Commit(Put("k", "c"));

        var responses = await c.DrainAsync();
        responses[0].Created.Should().BeTrue();
        responses[1].Events.Should().HaveCount(2);
        responses[1].Header.Revision.Should().Be(3);
        responses.Describe().Should().Equal("PUT k=b@2", "DELETE k@3", "PUT k=c@4");
    }

    [Fact]
    public async Task A_watch_on_a_future_revision_stays_silent_until_it_is_reached()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("", "\0", startRevision: 3));
        h.Commit(Put("a", "1"));
        h.Commit(Put("b", "2"));
        h.Commit(Put("c", "3"));
        h.Commit(Put("d", "4"));
        (await c.DrainAsync()).Describe().Should().Equal("PUT c=3@3", "PUT d=4@4");
    }

    [Fact]
    public async Task A_full_stream_demotes_the_watcher_without_blocking_and_it_is_caught_up_from_the_store_in_order()
    {
        using var h = new WatchHarness(bufferSize: 2);
        using var slow = h.Open();
        using var fast = h.Open();
        slow.Session.Create(Create("k"));
        fast.Session.Create(Create("k"));
        await fast.DrainAsync();

        for (var i = 1; i <= 10; i++)
        {
            h.Commit(Put("k", $"v{i}"));
            await fast.DrainAsync(); // the fast client keeps up; the slow one never reads
        }

        h.Hub.Counts.Should().Be((1, 1), "the slow watcher left the synced group instead of stalling the apply thread");
        h.Hub.SyncOnce().Should().Be(1, "its stream is still full");

        var expected = Enumerable.Range(1, 10).Select(i => $"PUT k=v{i}@{i}").ToArray();
        var got = new List<WatchResponse>();
        while (true)
        {
            got.AddRange(await slow.DrainAsync());
            if (h.Hub.SyncOnce() == 0 && slow.Session.QueuedEvents == 0)
            {
                got.AddRange(await slow.DrainAsync());
                break;
            }
        }

        got.Describe().Should().Equal(expected, "nothing is lost or duplicated");
        fast.All.Describe().Should().Equal(expected);
        h.Hub.Counts.Should().Be((2, 0));

        h.Commit(Put("k", "v11"));
        (await slow.DrainAsync()).Describe().Should().Equal("PUT k=v11@11");
    }

    [Fact]
    public async Task Concurrent_apply_catch_up_and_a_slow_reader_deliver_every_revision_exactly_once_in_order()
    {
        using var h = new WatchHarness(bufferSize: 3);
        using var c = h.Open();
        h.Commit(Put("k", "0"));
        c.Session.Create(Create("k", startRevision: 1));
        const int writes = 2000;
        using var done = new CancellationTokenSource();

        var apply = Task.Run(() =>
        {
            for (var i = 1; i <= writes; i++)
            {
                h.Commit(Put("k", $"{i}"));
            }
        });
        var sync = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                h.Hub.SyncOnce();
                await Task.Yield();
            }
        });
        var received = new List<long>();
        while (received.Count < writes + 1)
        {
            foreach (var r in await c.DrainAsync())
            {
                received.AddRange(r.Events.Select(e => e.Kv.ModRevision));
            }

            await Task.Yield();
            if (apply.IsFaulted || sync.IsFaulted)
            {
                break;
            }
        }

        await done.CancelAsync();
        await Task.WhenAll(apply, sync);
        received.Should().Equal(Enumerable.Range(1, writes + 1).Select(i => (long)i));
        h.Hub.SyncOnce();
        h.Hub.Counts.Should().Be((1, 0));
    }

    [Fact]
    public async Task Filters_drop_puts_or_deletes_and_a_fully_filtered_revision_sends_nothing()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("k", filters: FilterType.Noput));
        c.Session.Create(Create("k", filters: FilterType.Nodelete));
        await c.DrainAsync();
        h.Commit(Put("k", "1"));
        h.Commit(Del("k"));
        var responses = await c.DrainAsync();
        responses.Select(r => (r.WatchId, r.Events.Single().Type)).Should().Equal(
            (1L, Mvccpb.Event.Types.EventType.Put), (0L, Mvccpb.Event.Types.EventType.Delete));
    }

    [Fact]
    public async Task Prev_kv_is_read_at_the_previous_revision_except_for_creations()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("k", prevKv: true));
        h.Commit(Put("k", "v1"));
        h.Commit(Put("k", "v2"));
        h.Commit(Del("k"));
        var events = (await c.DrainAsync()).SelectMany(r => r.Events).ToList();
        events[0].PrevKv.Should().BeNull();
        events[1].PrevKv.Value.ToStringUtf8().Should().Be("v1");
        events[2].PrevKv.Value.ToStringUtf8().Should().Be("v2");
        events[2].PrevKv.ModRevision.Should().Be(2);
    }

    [Fact]
    public async Task A_start_revision_below_the_compaction_is_cancelled_with_the_compact_revision()
    {
        using var h = new WatchHarness();
        for (var i = 1; i <= 4; i++)
        {
            h.Commit(Put("w", $"{i}"));
        }

        h.Store.Compact(4);
        using var c = h.Open();
        c.Session.Create(Create("w", startRevision: 2));
        c.Session.Create(Create("w", startRevision: 4));
        h.Hub.SyncOnce();
        var responses = await c.DrainAsync();

        responses.Select(r => (r.WatchId, r.Created, r.Canceled, r.CompactRevision)).Should().Equal(
            (0L, true, false, 0L), (1L, true, false, 0L), (0L, false, true, 4L), (1L, false, false, 0L));
        responses.Describe().Should().Equal("PUT w=4@4");
        h.Hub.Counts.Should().Be((1, 0));
    }

    [Fact]
    public async Task A_negative_start_revision_is_compacted_with_compact_revision_minus_one_on_a_never_compacted_store()
    {
        // etcd 3.4: compactMainRev starts at -1 and an unsynced watcher with start < compactMainRev is cancelled with
        // it; clients treat any non-zero compact_revision as "required revision has been compacted". -1 itself is not
        // below it: its (empty) history read leaves it watching from the current revision.
        using var h = new WatchHarness();
        h.Commit(Put("a", "1"));
        h.Commit(Put("a", "2"));
        using var c = h.Open();
        c.Session.Create(Create("a", startRevision: -5));
        c.Session.Create(Create("a", startRevision: -1));
        h.Hub.SyncOnce().Should().Be(0);
        h.Commit(Put("a", "3"));

        var responses = await c.DrainAsync();
        responses.Select(r => (r.WatchId, r.Created, r.Canceled, r.CompactRevision, r.Header.Revision)).Should().Equal(
            (0L, true, false, 0L, 2L), (1L, true, false, 0L, 2L), (0L, false, true, -1L, 0L), (1L, false, false, 0L, 3L));
        responses.Describe().Should().Equal("PUT a=3@3");
        h.Hub.Counts.Should().Be((1, 0));
    }

    [Fact]
    public async Task A_negative_start_revision_after_a_compaction_is_cancelled_with_the_compact_revision()
    {
        using var h = new WatchHarness();
        for (var i = 1; i <= 3; i++)
        {
            h.Commit(Put("n", $"{i}"));
        }

        h.Store.Compact(3);
        using var c = h.Open();
        c.Session.Create(Create("n", startRevision: -1));
        h.Hub.SyncOnce().Should().Be(0);

        var responses = await c.DrainAsync();
        responses.Select(r => (r.WatchId, r.Created, r.Canceled, r.CompactRevision)).Should().Equal(
            (0L, true, false, 0L), (0L, false, true, 3L));
        h.Hub.Counts.Should().Be((0, 0));
    }

    [Fact]
    public async Task A_commit_during_the_catch_up_read_makes_the_sync_loop_run_again_at_once()
    {
        using var h = new WatchHarness();
        h.Commit(Put("r", "1"));
        using var c = h.Open();
        c.Session.Create(Create("r", startRevision: 1));
        (await h.Hub.WaitForSyncWorkAsync(CancellationToken.None)).Should().BeTrue("creating an unsynced watcher signals");

        h.Store.BeforeNextRead = () => h.Commit(Put("r", "2"));
        h.Hub.SyncOnce().Should().Be(1, "revision 2 arrived after the read's upper bound was taken");
        var again = h.Hub.WaitForSyncWorkAsync(CancellationToken.None);
        again.IsCompletedSuccessfully.Should().BeTrue("the watcher must not wait a whole sync interval for committed events");
        (await again).Should().BeTrue();

        h.Hub.SyncOnce().Should().Be(0);
        (await c.DrainAsync()).Describe().Should().Equal("PUT r=1@1", "PUT r=2@2");
    }

    [Fact]
    public async Task Duplicate_client_ids_are_refused_and_automatic_ids_skip_ids_in_use()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("a", watchId: 1));
        c.Session.Create(Create("b", watchId: 1));
        c.Session.Create(Create("c"));
        c.Session.Create(Create("d"));
        c.Session.Create(Create("b", "a"));
        var responses = await c.DrainAsync();
        responses.Select(r => (r.WatchId, r.Created, r.Canceled, r.CancelReason)).Should().Equal(
            (1L, true, false, ""),
            (-1L, true, true, "mvcc: duplicate watch ID provided on the WatchStream"),
            (0L, true, false, ""),
            (2L, true, false, ""),
            (-1L, true, true, "mvcc: watcher range is empty"));
    }

    [Fact]
    public async Task Cancel_answers_once_and_stops_events()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("k"));
        c.Session.Cancel(0);
        c.Session.Cancel(0);
        h.Commit(Put("k", "v"));
        var responses = await c.DrainAsync();
        responses.Select(r => (r.WatchId, r.Created, r.Canceled)).Should().Equal((0L, true, false), (0L, false, true));
        h.Hub.Counts.Should().Be((0, 0));
    }

    [Fact]
    public async Task Progress_request_answers_at_once_when_synced_and_is_deferred_while_catching_up()
    {
        using var h = new WatchHarness();
        h.Commit(Put("k", "1"));
        h.Commit(Put("k", "2"));
        using var c = h.Open();
        c.Session.Create(Create("k"));
        c.Session.RequestProgress();
        var first = await c.DrainAsync();
        first[1].WatchId.Should().Be(-1);
        first[1].Header.Revision.Should().Be(2);
        first[1].Events.Should().BeEmpty();

        c.Session.Create(Create("k", startRevision: 1));
        c.Session.RequestProgress();
        (await c.DrainAsync()).Should().ContainSingle(r => r.Created, "no progress while a watcher is unsynced");
        h.Hub.SyncOnce();
        var after = await c.DrainAsync();
        after.Select(r => (r.WatchId, r.Events.Count)).Should().Equal((1L, 2), (-1L, 0));
        after[1].Header.Revision.Should().Be(2);
    }

    [Fact]
    public async Task A_deferred_progress_is_answered_when_the_unsynced_watcher_is_cancelled()
    {
        using var h = new WatchHarness();
        h.Commit(Put("k", "1"));
        using var c = h.Open();
        c.Session.Create(Create("k", startRevision: 1));
        c.Session.RequestProgress();
        c.Session.Cancel(0);
        (await c.DrainAsync()).Select(r => (r.WatchId, r.Created, r.Canceled)).Should().Equal(
            (0L, true, false), (0L, false, true), (-1L, false, false));
    }

    [Fact]
    public async Task Progress_notify_ticks_reach_only_quiet_synced_watchers_that_asked_for_them()
    {
        using var h = new WatchHarness();
        using var c = h.Open();
        c.Session.Create(Create("a", progressNotify: true));
        c.Session.Create(Create("b", progressNotify: true));
        c.Session.Create(Create("c"));
        await c.DrainAsync();
        h.Commit(Put("a", "1"));
        await c.DrainAsync();

        c.Session.ProgressTick();
        var tick = await c.DrainAsync();
        tick.Select(r => (r.WatchId, r.Header.Revision, r.Events.Count)).Should().Equal((1L, 1L, 0));

        c.Session.ProgressTick();
        (await c.DrainAsync()).Select(r => r.WatchId).Should().Equal(0L, 1L);
    }

    [Fact]
    public async Task Large_responses_of_fragmenting_watchers_are_split()
    {
        using var h = new WatchHarness(maxResponseBytes: 300);
        using var c = h.Open();
        var request = Create("f/", "f0");
        request.Fragment = true;
        c.Session.Create(request);
        await c.DrainAsync();
        h.Commit([.. Enumerable.Range(0, 10).Select(i => Put($"f/{i}", new string('x', 100)))]);
        var parts = await c.DrainAsync();
        parts.Should().HaveCountGreaterThan(1);
        parts.Take(parts.Count - 1).Should().OnlyContain(r => r.Fragment);
        parts[^1].Fragment.Should().BeFalse();
        parts.SelectMany(r => r.Events).Should().HaveCount(10);
    }

    [Fact]
    public async Task Closing_a_session_removes_its_watchers()
    {
        using var h = new WatchHarness();
        h.Commit(Put("k", "0"));
        var c = h.Open();
        c.Session.Create(Create("k"));
        c.Session.Create(Create("k", startRevision: 1));
        h.Hub.Counts.Should().Be((1, 1));
        c.Dispose();
        h.Hub.Counts.Should().Be((0, 0));
        h.Commit(Put("k", "v"));
        await Task.CompletedTask;
    }

    [Fact]
    public void Many_sessions_share_one_commit()
    {
        using var h = new WatchHarness();
        var clients = Enumerable.Range(0, 50).Select(_ => h.Open()).ToList();
        foreach (var c in clients)
        {
            c.Session.Create(Create("", "\0"));
        }

        h.Commit(Put("x", "1"));
        clients.Should().OnlyContain(c => c.Session.QueuedEvents == 1);
        clients.ForEach(c => c.Dispose());
    }
}
