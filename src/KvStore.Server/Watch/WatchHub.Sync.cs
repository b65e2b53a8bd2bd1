using Etcdserverpb;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Watch;

/// <summary>The catch-up half of the hub: unsynced watchers read their missing events from the store.</summary>
public sealed partial class WatchHub
{
    /// <summary>Waits until an unsynced watcher appears or the sync interval passes.</summary>
    internal Task<bool> WaitForSyncWorkAsync(CancellationToken cancellationToken) =>
        _syncSignal.WaitAsync(Options.SyncInterval, cancellationToken);

    /// <summary>
    /// One catch-up pass over up to <see cref="WatchOptions.MaxWatchersPerSync"/> unsynced watchers: a watcher that
    /// starts below the compacted revision gets a compacted response and is removed (etcd 3.4/3.5: start &lt; compact
    /// revision); the others get their history up to the hub's revision in one response and become synced when
    /// nothing newer arrived meanwhile. Store reads happen outside the lock, so the apply thread never waits for them.
    /// A watcher that advanced but is still behind (commits arrived during the read, or its history was cut) makes the
    /// loop run again at once rather than after <see cref="WatchOptions.SyncInterval"/> (etcd: unsynced watchers never
    /// wait a whole interval for events that are already committed). Returns the number of watchers still unsynced.
    /// </summary>
    public int SyncOnce()
    {
        List<Watcher> work;
        long toRevision;
        lock (_lock)
        {
            if (_unsynced.Count == 0)
            {
                return 0;
            }

            work = [.. _unsynced.Take(Options.MaxWatchersPerSync)];
            toRevision = Revision;
        }

        var compactRevision = WatchCompactRevision(Store.CompactRevision);
        var results = new List<(Watcher Watcher, long Start, IReadOnlyList<MvccEvent>? Events, long Next, bool Compacted)>(work.Count);
        foreach (var watcher in work)
        {
            long start;
            lock (_lock)
            {
                // A stream that is not reading would refuse the events: read nothing for it until it drains.
                if (watcher.Group != WatcherGroup.Unsynced || watcher.Stream.IsFull(Options))
                {
                    continue;
                }

                start = watcher.MinRevision;
            }

            if (start < compactRevision)
            {
                results.Add((watcher, start, null, 0, true));
                continue;
            }

            if (start < 0)
            {
                // etcd reads the key bucket from revision start (as unsigned bytes: after every real revision), which
                // finds nothing; the watcher then continues from the current revision.
                results.Add((watcher, start, [], toRevision + 1, false));
                continue;
            }

            var (events, next) = ReadHistory(watcher, Math.Max(1, start), toRevision);
            results.Add((watcher, start, events, next, events is null));
        }

        var advanced = false;
        lock (_lock)
        {
            foreach (var (watcher, start, events, next, compacted) in results)
            {
                if (watcher.Group != WatcherGroup.Unsynced || watcher.MinRevision != start)
                {
                    continue;
                }

                if (compacted)
                {
                    var stream = watcher.Stream;
                    Remove(watcher);
                    // etcd sends this response with no revision in its header (revision 0).
                    stream.QueueControl(
                        new WatchResponse
                        {
                            WatchId = watcher.Id,
                            CompactRevision = Math.Max(compactRevision, WatchCompactRevision(Store.CompactRevision)),
                            Canceled = true,
                        },
                        0);
                    if (stream.DeferredProgress)
                    {
                        RequestProgress(stream);
                    }

                    continue;
                }

                var wanted = watcher.Filter(events!);
                if (wanted.Count > 0)
                {
                    if (!watcher.Stream.TryQueueEvents(watcher, next - 1, new EventBatch(wanted), Options))
                    {
                        continue; // still full; try again next pass
                    }

                    watcher.ProgressDue = false;
                }

                watcher.MinRevision = next;
                if (next > Revision)
                {
                    _unsynced.Remove(watcher);
                    AddSynced(watcher);
                    if (watcher.Stream.DeferredProgress)
                    {
                        RequestProgress(watcher.Stream);
                    }
                }
                else
                {
                    advanced = true;
                }
            }

            if (advanced && _syncSignal.CurrentCount == 0)
            {
                _syncSignal.Release();
            }

            return _unsynced.Count;
        }
    }

    /// <summary>
    /// The compact revision as etcd's watchable store compares it with a watcher's start: etcd's compactMainRev is -1
    /// until the first compaction, so a negative start revision below -1 is "compacted" even on a fresh store (the
    /// cancel response carries compact_revision -1, which clients report as "required revision has been compacted"),
    /// while -1 itself is not.
    /// </summary>
    internal static long WatchCompactRevision(long storeCompactRevision) =>
        storeCompactRevision > 0 ? storeCompactRevision : -1;

    /// <summary>
    /// Events for [start, toRevision], cut at a revision boundary when there are too many; returns them and the next
    /// revision to read, or null events if the range was compacted meanwhile.
    /// </summary>
    private (IReadOnlyList<MvccEvent>? Events, long Next) ReadHistory(Watcher watcher, long start, long toRevision)
    {
        if (start > toRevision)
        {
            return ([], start);
        }

        IReadOnlyList<MvccEvent> events;
        try
        {
            events = Store.ReadEvents(watcher.Key, watcher.StoreRangeEnd, start, toRevision, Options.MaxEventsPerSync);
        }
        catch (Exception ex) when (Store.CompactRevision > start)
        {
            Log.HistoryCompacted(_logger, watcher.Id, ex);
            return (null, 0);
        }

        // Cut at the stream's byte budget too: the revision that crosses it is the first one left for the next pass.
        var bytes = 0L;
        for (var i = 0; i < events.Count; i++)
        {
            bytes += WatchSession.EventBytes(events[i]);
            if (bytes > Options.StreamBufferBytes)
            {
                events = [.. events.Take(i + 1)];
                break;
            }
        }

        if (events.Count < Options.MaxEventsPerSync && bytes <= Options.StreamBufferBytes)
        {
            return (events, toRevision + 1);
        }

        // Truncated: keep whole revisions only, so no revision is split between two responses.
        var last = events[^1].Kv.ModRevision;
        var whole = events.TakeWhile(e => e.Kv.ModRevision < last).ToList();
        if (whole.Count > 0)
        {
            return (whole, last);
        }

        // One revision alone exceeds the limit: read exactly that revision in full.
        return (Store.ReadEvents(watcher.Key, watcher.StoreRangeEnd, start, last, int.MaxValue), last + 1);
    }
}
