using KvStore.Storage.Mvcc;

namespace KvStore.Server.Watch;

/// <summary>
/// Events queued for a watcher, with their wire form built once for every watcher that receives the same list: a
/// commit watched by a thousand watchers converts its events to protobuf once, not a thousand times. Writing a message
/// does not change it, so the send loops of several streams may write the same instances at once.
/// </summary>
internal sealed class EventBatch
{
    private Mvccpb.Event[]? _wire;

    public EventBatch(IReadOnlyList<MvccEvent> events)
    {
        Events = events;
        Bytes = WatchSession.EventBytes(events);
    }

    public IReadOnlyList<MvccEvent> Events { get; }

    /// <summary>What the batch counts against the stream's byte bound (<see cref="WatchSession.EventBytes(IReadOnlyList{MvccEvent})"/>).</summary>
    public long Bytes { get; }

    /// <summary>The events as etcd's Event messages, without prev_kv (a watcher that wants it copies the event).</summary>
    public Mvccpb.Event[] Wire
    {
        get
        {
            if (Volatile.Read(ref _wire) is { } built)
            {
                return built;
            }

            var wire = new Mvccpb.Event[Events.Count];
            for (var i = 0; i < wire.Length; i++)
            {
                var e = Events[i];
                wire[i] = new Mvccpb.Event
                {
                    Type = e.Type == EventType.Put ? Mvccpb.Event.Types.EventType.Put : Mvccpb.Event.Types.EventType.Delete,
                    Kv = WatchSession.ToProto(e.Kv),
                };
            }

            return Interlocked.CompareExchange(ref _wire, wire, null) ?? wire;
        }
    }
}
