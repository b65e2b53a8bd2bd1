using System.Threading.Channels;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Watch;

/// <summary>
/// One client Watch stream: its watchers and the queue of responses waiting to be written. The apply thread and the
/// sync loop only ever queue (never wait); <see cref="RunSendLoopAsync"/> is the single writer to the client.
/// Responses are queued under the hub's lock, so their order is the order of revisions.
/// </summary>
public sealed class WatchSession : IDisposable
{
    private readonly WatchHub _hub;
    private readonly Channel<StreamItem> _queue = Channel.CreateUnbounded<StreamItem>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });
    private int _queuedEvents;
    private long _queuedBytes;
    private int _queuedControls;
    private int _disposed;

    internal WatchSession(WatchHub hub)
    {
        _hub = hub;
    }

    /// <summary>Watchers by ID (hub lock).</summary>
    internal Dictionary<long, Watcher> Watchers { get; } = [];

    /// <summary>The next automatically assigned watch ID (hub lock).</summary>
    internal long NextId { get; set; }

    /// <summary>A progress request is waiting for every watcher of the stream to be synced (hub lock).</summary>
    internal bool DeferredProgress { get; set; }

    /// <summary>Event responses queued and not yet written.</summary>
    internal int QueuedEvents => Volatile.Read(ref _queuedEvents);

    /// <summary>Approximate bytes of the event responses queued and not yet written (<see cref="EventBytes"/>).</summary>
    internal long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    /// <summary>Control responses queued and not yet written.</summary>
    internal int QueuedControls => Volatile.Read(ref _queuedControls);

    /// <summary>Handles a WatchCreateRequest: queues the created (or refused) response, then the watcher's events.</summary>
    public void Create(WatchCreateRequest request) => _hub.Create(this, request);

    /// <summary>Answers a create request with a refusal (created and cancelled at once, with etcd's reason).</summary>
    public void Refuse(string reason) =>
        QueueControl(new WatchResponse { WatchId = -1, Created = true, Canceled = true, CancelReason = reason }, _hub.Store.CurrentRevision);

    /// <summary>Handles a WatchCancelRequest: queues the cancelled response if the watcher existed.</summary>
    public void Cancel(long watchId) => _hub.Cancel(this, watchId);

    /// <summary>Handles a WatchProgressRequest (etcd 3.5 semantics: answered once every watcher is synced).</summary>
    public void RequestProgress() => _hub.RequestProgress(this);

    /// <summary>
    /// True when no event response may be queued now: <see cref="WatchOptions.StreamBufferSize"/> responses or
    /// <see cref="WatchOptions.StreamBufferBytes"/> bytes are waiting to be written.
    /// </summary>
    internal bool IsFull(WatchOptions options) =>
        QueuedEvents >= options.StreamBufferSize || QueuedBytes >= options.StreamBufferBytes;

    /// <summary>
    /// Queues an event response unless the stream is full (<see cref="IsFull"/>). Called under the hub's lock, which
    /// makes the check and the enqueue one step; the send loop only ever lowers the counters.
    /// </summary>
    internal bool TryQueueEvents(Watcher watcher, long revision, EventBatch batch, WatchOptions options)
    {
        if (IsFull(options))
        {
            return false;
        }

        if (!_queue.Writer.TryWrite(new EventsItem(watcher, revision, batch)))
        {
            return false;
        }

        Interlocked.Increment(ref _queuedEvents);
        Interlocked.Add(ref _queuedBytes, batch.Bytes);
        return true;
    }

    /// <summary>What a list of events counts against <see cref="WatchOptions.StreamBufferBytes"/>: keys, values, 64 bytes each.</summary>
    internal static long EventBytes(IReadOnlyList<MvccEvent> events)
    {
        long bytes = 0;
        foreach (var e in events)
        {
            bytes += EventBytes(e);
        }

        return bytes;
    }

    internal static long EventBytes(MvccEvent e) => 64 + e.Kv.Key.Length + (e.Kv.Value?.Length ?? 0);

    /// <summary>Queues a control response (created, cancelled, compacted, progress); never refused while open.</summary>
    internal void QueueControl(WatchResponse response, long revision)
    {
        if (_queue.Writer.TryWrite(new ControlItem(response, revision)))
        {
            Interlocked.Increment(ref _queuedControls);
        }
    }

    /// <summary>
    /// Writes queued responses to the client until cancelled: fills headers, adds prev_kv (read at mod_revision - 1),
    /// fragments large responses of fragmenting watchers, and sends periodic progress notifications. When
    /// <paramref name="flush"/> is given, <paramref name="write"/> may buffer and the loop flushes once per batch of
    /// queued responses, so one commit fanned out to many watchers of a stream leaves in a few frames, not one each.
    /// </summary>
    public async Task RunSendLoopAsync(
        Func<WatchResponse, Task> write, Func<long, ResponseHeader> header, CancellationToken cancellationToken, Func<Task>? flush = null)
    {
        ArgumentNullException.ThrowIfNull(write);
        ArgumentNullException.ThrowIfNull(header);
        using var progress = _hub.Time.CreateTimer(
            static state => ((WatchSession)state!).ProgressTick(), this, _hub.Options.ProgressNotifyInterval, _hub.Options.ProgressNotifyInterval);
        while (await _queue.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (await DrainAsync(write, header).ConfigureAwait(false) > 0 && flush is not null)
            {
                await flush().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Writes every response queued so far; returns how many queue items were handled.</summary>
    internal async Task<int> DrainAsync(Func<WatchResponse, Task> write, Func<long, ResponseHeader> header)
    {
        var handled = 0;
        while (_queue.Reader.TryRead(out var item))
        {
            handled++;
            switch (item)
            {
                case ControlItem control:
                    control.Response.Header = header(control.Revision);
                    await write(control.Response).ConfigureAwait(false);
                    Interlocked.Decrement(ref _queuedControls);
                    break;
                case EventsItem events:
                    await WriteEventsAsync(events, write, header).ConfigureAwait(false);
                    Interlocked.Decrement(ref _queuedEvents);
                    Interlocked.Add(ref _queuedBytes, -events.Batch.Bytes);
                    break;
            }
        }

        return handled;
    }

    /// <summary>Removes the stream's watchers from the hub.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _hub.Close(this);
            _queue.Writer.TryComplete();
        }
    }

    internal void ProgressTick() => _hub.ProgressTick(this);

    private async Task WriteEventsAsync(EventsItem item, Func<WatchResponse, Task> write, Func<long, ResponseHeader> header)
    {
        var watcher = item.Watcher;
        var response = new WatchResponse { Header = header(item.Revision), WatchId = watcher.Id };
        var wire = item.Batch.Wire;
        for (var i = 0; i < wire.Length; i++)
        {
            var ev = wire[i];
            var e = item.Batch.Events[i];
            var isCreate = e.Type == EventType.Put && e.Kv.CreateRevision == e.Kv.ModRevision;
            if (watcher.PrevKv && !isCreate)
            {
                var prev = _hub.Store.ReadAt(e.Kv.Key, e.Kv.ModRevision - 1);
                if (prev is not null)
                {
                    // The shared event stays as it is: this watcher's copy carries the previous value.
                    ev = new Mvccpb.Event { Type = ev.Type, Kv = ev.Kv, PrevKv = ToProto(prev) };
                }
            }

            response.Events.Add(ev);
        }

        if (!watcher.Fragment || response.Events.Count < 2 || response.CalculateSize() < _hub.Options.MaxResponseBytes)
        {
            await write(response).ConfigureAwait(false);
            return;
        }

        // Split into responses below the limit (each with at least one event); all but the last carry fragment=true.
        var all = response.Events.ToList();
        var index = 0;
        while (index < all.Count)
        {
            var part = new WatchResponse { Header = response.Header, WatchId = response.WatchId, Fragment = true };
            part.Events.Add(all[index++]);
            while (index < all.Count)
            {
                part.Events.Add(all[index]);
                if (part.CalculateSize() >= _hub.Options.MaxResponseBytes)
                {
                    part.Events.RemoveAt(part.Events.Count - 1);
                    break;
                }

                index++;
            }

            part.Fragment = index < all.Count;
            await write(part).ConfigureAwait(false);
        }
    }

    internal static Mvccpb.KeyValue ToProto(KeyValue kv) => new()
    {
        Key = UnsafeByteOperations.UnsafeWrap(kv.Key),
        CreateRevision = kv.CreateRevision,
        ModRevision = kv.ModRevision,
        Version = kv.Version,
        Value = UnsafeByteOperations.UnsafeWrap(kv.Value ?? []),
        Lease = kv.Lease,
    };

    private abstract record StreamItem;

    private sealed record EventsItem(Watcher Watcher, long Revision, EventBatch Batch) : StreamItem;

    private sealed record ControlItem(WatchResponse Response, long Revision) : StreamItem;
}
