using System.Threading.Channels;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Watch;

/// <summary>
/// One client Watch stream: its watchers and the queue of responses waiting to be written. The apply thread and the
/// sync loop only ever queue (never wait). Once <see cref="RunSendLoopAsync"/> has given the stream its writer, the
/// hub's <see cref="WatchSendPump"/> writes what is queued, one drain at a time per stream. Responses are queued under
/// the hub's lock, so their order is the order of revisions.
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

    // The stream's turn with the send pump (guarded by _sendLock): idle, waiting in the pump's queue, being drained,
    // being drained with more queued since it started, or closed (the send loop ended).
    private readonly Lock _sendLock = new();
    private SendState _sendState;
    private SendTarget? _target;
    private TaskCompletionSource? _sendEnded;
    private TaskCompletionSource? _drainEnded;

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
        ScheduleSend();
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
            ScheduleSend();
        }
    }

    /// <summary>
    /// Writes queued responses to the client until cancelled or the stream is disposed: fills headers, adds prev_kv (read
    /// at mod_revision - 1), fragments large responses of fragmenting watchers, and sends periodic progress
    /// notifications. The writing itself runs on the hub's send pump. When <paramref name="flush"/> is given,
    /// <paramref name="write"/> may buffer and each drain of the queue ends with one flush, so one commit fanned out to
    /// many watchers of a stream leaves in a few frames, not one each. Fails with the first failed write; returns only
    /// once no write is under way, so the caller may end the stream.
    /// </summary>
    public async Task RunSendLoopAsync(
        Func<WatchResponse, Task> write, Func<long, ResponseHeader> header, CancellationToken cancellationToken, Func<Task>? flush = null)
    {
        ArgumentNullException.ThrowIfNull(write);
        ArgumentNullException.ThrowIfNull(header);
        using var progress = _hub.Time.CreateTimer(
            static state => ((WatchSession)state!).ProgressTick(), this, _hub.Options.ProgressNotifyInterval, _hub.Options.ProgressNotifyInterval);
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_sendLock)
        {
            if (_target is not null)
            {
                throw new InvalidOperationException("the stream already has a send loop");
            }

            if (Volatile.Read(ref _disposed) != 0)
            {
                return;
            }

            _target = new SendTarget(write, header, flush);
            _sendEnded = ended;
        }

        ScheduleSend(); // what was queued before the loop started
        try
        {
            using var cancel = cancellationToken.Register(static state => ((TaskCompletionSource)state!).TrySetCanceled(), ended);
            await ended.Task.ConfigureAwait(false);
        }
        finally
        {
            Task drainEnded;
            lock (_sendLock)
            {
                drainEnded = _sendState is SendState.Draining or SendState.DrainingAgain
                    ? (_drainEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task
                    : Task.CompletedTask;
                _sendState = SendState.Closed;
            }

            await drainEnded.ConfigureAwait(false);
        }
    }

    /// <summary>After a response is queued: hands the stream to the send pump, unless it is there already or being drained.</summary>
    private void ScheduleSend()
    {
        lock (_sendLock)
        {
            switch (_sendState)
            {
                case SendState.Idle when _target is not null:
                    _sendState = SendState.Queued;
                    break;
                case SendState.Draining:
                    _sendState = SendState.DrainingAgain;
                    return;
                default:
                    return;
            }
        }

        _hub.SendPump.Enqueue(this);
    }

    /// <summary>
    /// The send pump's turn: writes everything queued. A drain that has to wait (a flush held by a slow client) goes on
    /// by itself and the pump moves to the next stream. Never throws: a failed write ends the send loop.
    /// </summary>
    internal void Send()
    {
        SendTarget target;
        lock (_sendLock)
        {
            if (_sendState != SendState.Queued)
            {
                return;
            }

            _sendState = SendState.Draining;
            target = _target!;
        }

        Task drain;
        try
        {
            drain = DrainAndFlushAsync(target);
        }
        catch (Exception e)
        {
            drain = Task.FromException(e);
        }

        if (drain.IsCompleted)
        {
            Drained(drain);
        }
        else
        {
            drain.ContinueWith(static (done, state) => ((WatchSession)state!).Drained(done), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private async Task DrainAndFlushAsync(SendTarget target)
    {
        if (await DrainAsync(target.Write, target.Header).ConfigureAwait(false) > 0 && target.Flush is not null)
        {
            await target.Flush().ConfigureAwait(false);
        }
    }

    private void Drained(Task drain)
    {
        var again = false;
        TaskCompletionSource? closing;
        lock (_sendLock)
        {
            if (!drain.IsCompletedSuccessfully)
            {
                _sendState = SendState.Closed;
            }
            else if (_sendState == SendState.DrainingAgain)
            {
                _sendState = SendState.Queued;
                again = true;
            }
            else if (_sendState == SendState.Draining)
            {
                _sendState = SendState.Idle;
            }

            closing = _drainEnded;
        }

        if (!drain.IsCompletedSuccessfully)
        {
            _sendEnded!.TrySetException(drain.Exception?.InnerExceptions ?? [new OperationCanceledException()]);
        }

        closing?.TrySetResult();
        if (again)
        {
            _hub.SendPump.Enqueue(this);
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
            lock (_sendLock)
            {
                _sendEnded?.TrySetResult();
            }
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

    private enum SendState
    {
        Idle,
        Queued,
        Draining,
        DrainingAgain,
        Closed,
    }

    private sealed record SendTarget(Func<WatchResponse, Task> Write, Func<long, ResponseHeader> Header, Func<Task>? Flush);

    private abstract record StreamItem;

    private sealed record EventsItem(Watcher Watcher, long Revision, EventBatch Batch) : StreamItem;

    private sealed record ControlItem(WatchResponse Response, long Revision) : StreamItem;
}
