using Etcdserverpb;
using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Storage;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Watch;

/// <summary>
/// Routes committed events to watchers, shaped after etcd's watchable store. Watchers are either <b>synced</b> (they
/// have everything up to the hub's revision and receive new events from <see cref="OnCommitted"/>) or <b>unsynced</b>
/// (replaying history, or fallen behind because their stream's buffer was full); the sync loop reads unsynced
/// watchers' missing events from the store and moves them back to synced once they are current.
/// <see cref="OnCommitted"/> runs on the apply thread and never waits for a client: it only queues, and a full
/// queue demotes the watcher instead of blocking (etcd parks such watchers as "victims"; we re-read from the store).
/// One lock guards all groups and all queueing, which keeps every stream's responses in revision order.
/// </summary>
public sealed partial class WatchHub : IWatchEventSink, IStoreRestoredHandler, IDisposable
{
    private const string DuplicateIdReason = "mvcc: duplicate watch ID provided on the WatchStream";
    private const string EmptyRangeReason = "mvcc: watcher range is empty";

    private readonly Lock _lock = new();
    private readonly Dictionary<byte[], List<Watcher>> _syncedKeys = new(ByteKeyComparer.Instance);
    private readonly List<Watcher> _syncedRanges = [];
    private readonly HashSet<Watcher> _unsynced = [];
    private readonly SemaphoreSlim _syncSignal = new(0);
    private readonly ILogger _logger;
    private long _revision = -1;

    /// <summary>Creates a hub over a store.</summary>
    public WatchHub(IWatchableStore store, WatchOptions options, TimeProvider time, ILogger<WatchHub> logger)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        Store = store;
        Options = options;
        Time = time;
        _logger = logger;
    }

    internal IWatchableStore Store { get; }

    internal WatchOptions Options { get; }

    internal TimeProvider Time { get; }

    /// <summary>Writes the streams' queued responses.</summary>
    internal WatchSendPump SendPump { get; } = new();

    /// <summary>The revision up to which every synced watcher has been served (hub lock).</summary>
    private long Revision
    {
        get
        {
            if (_revision < 0)
            {
                _revision = Store.CurrentRevision;
            }

            return _revision;
        }
    }

    /// <summary>Number of synced and unsynced watchers (for tests and metrics).</summary>
    public (int Synced, int Unsynced) Counts
    {
        get
        {
            lock (_lock)
            {
                return (_syncedKeys.Values.Sum(l => l.Count) + _syncedRanges.Count, _unsynced.Count);
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _syncSignal.Dispose();

    /// <summary>Opens a stream; dispose it when the client goes away.</summary>
    public WatchSession OpenSession() => new(this);

    /// <inheritdoc/>
    public void OnCommitted(long revision, IReadOnlyList<MvccEvent> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        lock (_lock)
        {
            if (revision > Revision)
            {
                _revision = revision;
            }

            if (events.Count == 0 || (_syncedKeys.Count == 0 && _syncedRanges.Count == 0))
            {
                return;
            }

            if (events.Count == 1)
            {
                DeliverOne(revision, new EventBatch(events));
                return;
            }

            var batches = CollectBatches(revision, events);
            if (batches is null)
            {
                return;
            }

            foreach (var (watcher, batch) in batches)
            {
                Deliver(watcher, revision, new EventBatch(batch));
            }
        }
    }

    /// <summary>
    /// The common commit of one event: every synced watcher of its key gets the same batch, so its wire form is built
    /// once. Watchers that fall behind leave the synced groups only after the walk over them.
    /// </summary>
    private void DeliverOne(long revision, EventBatch batch)
    {
        var key = batch.Events[0].Kv.Key;
        List<Watcher>? behind = null;
        if (_syncedKeys.TryGetValue(key, out var exact))
        {
            foreach (var watcher in exact)
            {
                TryDeliver(watcher, revision, batch, ref behind);
            }
        }

        foreach (var watcher in _syncedRanges)
        {
            if (watcher.Matches(key))
            {
                TryDeliver(watcher, revision, batch, ref behind);
            }
        }

        foreach (var watcher in behind ?? [])
        {
            FellBehind(watcher, revision);
        }

        void TryDeliver(Watcher watcher, long revision, EventBatch batch, ref List<Watcher>? behind)
        {
            if (watcher.MinRevision <= revision && !Queue(watcher, revision, batch))
            {
                (behind ??= []).Add(watcher);
            }
        }
    }

    private void Deliver(Watcher watcher, long revision, EventBatch batch)
    {
        if (!Queue(watcher, revision, batch))
        {
            FellBehind(watcher, revision);
        }
    }

    /// <summary>Queues the events this watcher wants; false if its stream is full (nothing is queued then).</summary>
    private bool Queue(Watcher watcher, long revision, EventBatch batch)
    {
        var wanted = watcher.Filter(batch.Events);
        if (wanted.Count == 0)
        {
            watcher.MinRevision = revision + 1;
            return true;
        }

        if (!watcher.Stream.TryQueueEvents(watcher, revision, ReferenceEquals(wanted, batch.Events) ? batch : new EventBatch(wanted), Options))
        {
            return false;
        }

        watcher.MinRevision = revision + 1;
        watcher.ProgressDue = false;
        return true;
    }

    /// <summary>The client is slow: never wait for it here. Catch it up from the store from this revision on.</summary>
    private void FellBehind(Watcher watcher, long revision)
    {
        watcher.MinRevision = revision;
        MoveToUnsynced(watcher);
        Log.WatcherFellBehind(_logger, watcher.Id, revision);
    }

    /// <inheritdoc/>
    void IStoreRestoredHandler.OnStoreRestored(MvccStore store) => OnRestored(store.CurrentRevision);

    /// <summary>
    /// The store's state was replaced by a snapshot (now at <paramref name="revision"/>): every synced watcher becomes
    /// unsynced at its next revision, so the sync loop catches it up from the new store, or cancels it with the compact
    /// revision when the snapshot's history no longer holds its start (etcd's watchableStore.Restore).
    /// </summary>
    public void OnRestored(long revision)
    {
        lock (_lock)
        {
            _revision = revision;
            var synced = _syncedKeys.Values.SelectMany(l => l).Concat(_syncedRanges).ToList();
            foreach (var watcher in synced)
            {
                MoveToUnsynced(watcher);
            }

            if (_unsynced.Count > 0 && _syncSignal.CurrentCount == 0)
            {
                _syncSignal.Release();
            }

            Log.WatchersRestored(_logger, synced.Count, _unsynced.Count, revision);
        }
    }

    internal void Create(WatchSession stream, WatchCreateRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);

        // etcd's request forms: empty key = "\0"; empty range_end = single key; range_end "\0" = every key >= key.
        byte[] key = request.Key.IsEmpty ? [0] : request.Key.ToByteArray();
        byte[]? rangeEnd = request.RangeEnd.Length switch
        {
            0 => null,
            1 when request.RangeEnd[0] == 0 => [],
            _ => request.RangeEnd.ToByteArray(),
        };
        lock (_lock)
        {
            var revision = Revision;
            string? refusal = null;
            if (rangeEnd is { Length: > 0 } && key.AsSpan().SequenceCompareTo(rangeEnd) >= 0)
            {
                refusal = EmptyRangeReason;
            }
            else if (request.WatchId != 0 && stream.Watchers.ContainsKey(request.WatchId))
            {
                refusal = DuplicateIdReason;
            }

            if (refusal is not null)
            {
                stream.QueueControl(new WatchResponse { WatchId = -1, Created = true, Canceled = true, CancelReason = refusal }, revision);
                return;
            }

            var id = request.WatchId;
            if (id == 0)
            {
                while (stream.Watchers.ContainsKey(stream.NextId))
                {
                    stream.NextId++;
                }

                id = stream.NextId++;
            }

            var startRevision = request.StartRevision == 0 ? revision + 1 : request.StartRevision;
            var watcher = new Watcher
            {
                Stream = stream,
                Id = id,
                Key = key,
                RangeEnd = rangeEnd,
                NoPut = request.Filters.Contains(WatchCreateRequest.Types.FilterType.Noput),
                NoDelete = request.Filters.Contains(WatchCreateRequest.Types.FilterType.Nodelete),
                PrevKv = request.PrevKv,
                ProgressNotify = request.ProgressNotify,
                Fragment = request.Fragment,
                MinRevision = startRevision,
            };
            stream.Watchers[id] = watcher;
            stream.QueueControl(new WatchResponse { WatchId = id, Created = true }, revision);
            if (startRevision > revision)
            {
                AddSynced(watcher);
            }
            else
            {
                MoveToUnsynced(watcher);
            }
        }
    }

    internal void Cancel(WatchSession stream, long watchId)
    {
        lock (_lock)
        {
            if (stream.Watchers.TryGetValue(watchId, out var watcher))
            {
                Remove(watcher);
                stream.QueueControl(new WatchResponse { WatchId = watchId, Canceled = true }, Revision);
                if (stream.DeferredProgress)
                {
                    RequestProgress(stream); // the watcher that held it back may be gone
                }
            }
        }
    }

    internal void RequestProgress(WatchSession stream)
    {
        lock (_lock)
        {
            foreach (var watcher in stream.Watchers.Values)
            {
                if (watcher.Group != WatcherGroup.Synced)
                {
                    stream.DeferredProgress = true;
                    return;
                }
            }

            stream.DeferredProgress = false;
            stream.QueueControl(new WatchResponse { WatchId = -1 }, Revision);
        }
    }

    internal void ProgressTick(WatchSession stream)
    {
        lock (_lock)
        {
            foreach (var watcher in stream.Watchers.Values)
            {
                if (!watcher.ProgressNotify)
                {
                    continue;
                }

                // A stream that is not reading gets no more progress responses (etcd drops them on a full channel).
                if (watcher.ProgressDue && watcher.Group == WatcherGroup.Synced && stream.QueuedControls < Options.StreamBufferSize)
                {
                    stream.QueueControl(new WatchResponse { WatchId = watcher.Id }, Revision);
                }

                watcher.ProgressDue = true;
            }
        }
    }

    internal void Close(WatchSession stream)
    {
        lock (_lock)
        {
            foreach (var watcher in stream.Watchers.Values.ToList())
            {
                Remove(watcher);
            }
        }
    }

    private Dictionary<Watcher, List<MvccEvent>>? CollectBatches(long revision, IReadOnlyList<MvccEvent> events)
    {
        Dictionary<Watcher, List<MvccEvent>>? batches = null;
        foreach (var e in events)
        {
            if (_syncedKeys.TryGetValue(e.Kv.Key, out var exact))
            {
                foreach (var watcher in exact)
                {
                    Add(ref batches, watcher, e, revision);
                }
            }

            foreach (var watcher in _syncedRanges)
            {
                if (watcher.Matches(e.Kv.Key))
                {
                    Add(ref batches, watcher, e, revision);
                }
            }
        }

        return batches;

        static void Add(ref Dictionary<Watcher, List<MvccEvent>>? batches, Watcher watcher, MvccEvent e, long revision)
        {
            if (watcher.MinRevision > revision)
            {
                return; // a watch on a future revision
            }

            batches ??= [];
            if (!batches.TryGetValue(watcher, out var list))
            {
                list = [];
                batches[watcher] = list;
            }

            list.Add(e);
        }
    }

    private void AddSynced(Watcher watcher)
    {
        watcher.Group = WatcherGroup.Synced;
        if (watcher.IsSingleKey)
        {
            if (!_syncedKeys.TryGetValue(watcher.Key, out var list))
            {
                list = [];
                _syncedKeys[watcher.Key] = list;
            }

            list.Add(watcher);
        }
        else
        {
            _syncedRanges.Add(watcher);
        }
    }

    private void RemoveSynced(Watcher watcher)
    {
        if (watcher.IsSingleKey)
        {
            if (_syncedKeys.TryGetValue(watcher.Key, out var list))
            {
                list.Remove(watcher);
                if (list.Count == 0)
                {
                    _syncedKeys.Remove(watcher.Key);
                }
            }
        }
        else
        {
            _syncedRanges.Remove(watcher);
        }
    }

    private void MoveToUnsynced(Watcher watcher)
    {
        if (watcher.Group == WatcherGroup.Synced)
        {
            RemoveSynced(watcher);
        }

        watcher.Group = WatcherGroup.Unsynced;
        _unsynced.Add(watcher);
        if (_syncSignal.CurrentCount == 0)
        {
            _syncSignal.Release();
        }
    }

    private void Remove(Watcher watcher)
    {
        switch (watcher.Group)
        {
            case WatcherGroup.Synced:
                RemoveSynced(watcher);
                break;
            case WatcherGroup.Unsynced:
                _unsynced.Remove(watcher);
                break;
        }

        watcher.Group = WatcherGroup.Removed;
        if (watcher.Stream.Watchers.TryGetValue(watcher.Id, out var current) && ReferenceEquals(current, watcher))
        {
            watcher.Stream.Watchers.Remove(watcher.Id);
        }
    }
}
