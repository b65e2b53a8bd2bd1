using System.Collections.Concurrent;

namespace KvStore.Server.Watch;

/// <summary>
/// Writes the watch streams that have responses queued, one stream after another on one thread-pool work item, instead
/// of waking a send loop per stream: a commit fanned out to a thousand streams costs one wake-up, not a thousand (each
/// with its async resume and cancellation registration). Writes into a stream's buffer normally complete at once; a
/// stream whose drain has to wait goes on by itself (<see cref="WatchSession.Send"/>), so a slow client never holds up
/// the others.
/// </summary>
internal sealed class WatchSendPump : IThreadPoolWorkItem
{
    private readonly ConcurrentQueue<WatchSession> _ready = new();
    private int _running;

    /// <summary>Queues a stream for its turn; starts the work item unless it is running.</summary>
    public void Enqueue(WatchSession session)
    {
        _ready.Enqueue(session);
        if (Interlocked.CompareExchange(ref _running, 1, 0) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
    }

    /// <inheritdoc/>
    public void Execute()
    {
        while (true)
        {
            while (_ready.TryDequeue(out var session))
            {
                session.Send();
            }

            Volatile.Write(ref _running, 0);
            // A stream queued between the last dequeue and the reset found the item running: take it on.
            if (_ready.IsEmpty || Interlocked.CompareExchange(ref _running, 1, 0) != 0)
            {
                return;
            }
        }
    }
}
