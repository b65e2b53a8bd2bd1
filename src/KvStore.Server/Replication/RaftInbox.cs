using System.Collections.Concurrent;
using System.Threading.Tasks.Sources;
using KvStore.Raft;
using KvStore.Server.Peer;

namespace KvStore.Server.Replication;

/// <summary>
/// The raft loop's inbox: one queue per kind of input instead of one queue of objects sorted by a type switch, so the
/// hot path (a client proposal) costs a struct enqueue and no allocation. Ticks and read-barrier requests are flags
/// (several of them before the loop wakes are one), peer input keeps its arrival order, rare work (conf changes,
/// leadership transfer, the tick advance) carries its own code. Many writers, one reader: the raft loop, which drains
/// everything and then waits on <see cref="WaitAsync"/>. A client proposal or read request that finds the loop waiting
/// runs the loop's next round on the caller's own thread (up to the loop's first wait, the WAL sync), so a lone request
/// does not pay a hand-off to another thread before its entry is written; input from the peer transport and the
/// timers wakes the loop on the thread pool instead, as those callers may hold locks of their own.
/// </summary>
internal sealed class RaftInbox : IValueTaskSource
{
    private readonly ConcurrentQueue<RaftProposal> _proposals = new();
    private readonly ConcurrentQueue<PeerInput> _peer = new();
    private readonly ConcurrentQueue<LoopWork> _work = new();

    // The wake-up of the single reader: Idle (nothing posted since it last looked), Posted, or Waiting (a reader is
    // suspended in WaitAsync and the next post completes it).
    private const int Idle = 0;
    private const int Posted = 1;
    private const int Waiting = 2;
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
    private int _signal;
    private int _tick;
    private int _read;
    private volatile bool _closed;

    /// <summary>True once <see cref="Close"/> was called: posts are refused.</summary>
    public bool IsClosed => _closed;

    /// <summary>True when anything is queued or flagged (the reader's check before it waits).</summary>
    public bool HasWork =>
        !_peer.IsEmpty || !_work.IsEmpty || !_proposals.IsEmpty || Volatile.Read(ref _tick) != 0 || Volatile.Read(ref _read) != 0;

    /// <summary>
    /// Queues a client proposal; false once closed. A waiting loop continues on the calling thread: call it holding no
    /// lock.
    /// </summary>
    public bool Post(RaftProposal proposal)
    {
        if (_closed)
        {
            return false;
        }

        _proposals.Enqueue(proposal);
        Wake(inline: true);
        return true;
    }

    /// <summary>Queues a message (or a snapshot received with it) from a peer; false once closed.</summary>
    public bool Post(PeerInput input)
    {
        if (_closed)
        {
            return false;
        }

        _peer.Enqueue(input);
        Wake(inline: false);
        return true;
    }

    /// <summary>Queues work to run on the raft loop with the node; false once closed.</summary>
    public bool Post(LoopWork work)
    {
        if (_closed)
        {
            return false;
        }

        _work.Enqueue(work);
        Wake(inline: false);
        return true;
    }

    /// <summary>Flags a heartbeat tick; ticks flagged before the loop takes them count once.</summary>
    public void PostTick()
    {
        if (!_closed && Interlocked.Exchange(ref _tick, 1) == 0)
        {
            Wake(inline: false);
        }
    }

    /// <summary>
    /// Flags that a batch of linearizable reads waits for a read index. A waiting loop continues on the calling thread:
    /// call it holding no lock.
    /// </summary>
    public void PostRead()
    {
        if (!_closed && Interlocked.Exchange(ref _read, 1) == 0)
        {
            Wake(inline: true);
        }
    }

    /// <summary>Refuses further posts and wakes the reader, which drains what is queued and stops.</summary>
    public void Close()
    {
        _closed = true;
        Wake(inline: false);
    }

    /// <summary>Reader: the next proposal.</summary>
    public bool TryTakeProposal(out RaftProposal proposal) => _proposals.TryDequeue(out proposal);

    /// <summary>Reader: the next peer input, in arrival order.</summary>
    public bool TryTakePeer(out PeerInput input) => _peer.TryDequeue(out input);

    /// <summary>Reader: the next loop work.</summary>
    public bool TryTakeWork(out LoopWork? work) => _work.TryDequeue(out work);

    /// <summary>Reader: takes the tick flag.</summary>
    public bool TakeTick() => Volatile.Read(ref _tick) != 0 && Interlocked.Exchange(ref _tick, 0) != 0;

    /// <summary>Reader: takes the read flag.</summary>
    public bool TakeRead() => Volatile.Read(ref _read) != 0 && Interlocked.Exchange(ref _read, 0) != 0;

    /// <summary>
    /// Reader: completes when something was posted (or the inbox closed) since the reader last returned from here.
    /// Check <see cref="HasWork"/> and <see cref="IsClosed"/> after it; it may complete with nothing left to take.
    /// Only one caller at a time, and each returned task is awaited before the next call.
    /// </summary>
    public ValueTask WaitAsync()
    {
        if (Interlocked.CompareExchange(ref _signal, Idle, Posted) == Posted)
        {
            return ValueTask.CompletedTask;
        }

        _core.Reset();
        if (Interlocked.CompareExchange(ref _signal, Waiting, Idle) == Idle)
        {
            return new ValueTask(this, _core.Version);
        }

        // Posted between the two exchanges: consume it.
        Volatile.Write(ref _signal, Idle);
        return ValueTask.CompletedTask;
    }

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

    private void Wake(bool inline)
    {
        while (true)
        {
            switch (Volatile.Read(ref _signal))
            {
                case Posted:
                    return;
                case Idle:
                    if (Interlocked.CompareExchange(ref _signal, Posted, Idle) == Idle)
                    {
                        return;
                    }

                    break;
                default:
                    if (Interlocked.CompareExchange(ref _signal, Idle, Waiting) == Waiting)
                    {
                        // Only the poster that took the waiter here touches the core until the reader waits again.
                        _core.RunContinuationsAsynchronously = !inline;
                        _core.SetResult(true);
                        return;
                    }

                    break;
            }
        }
    }
}

/// <summary>A client proposal on its way to the raft loop: the waiter's request id and the encoded request.</summary>
internal readonly record struct RaftProposal(ulong Id, byte[] Data);

/// <summary>
/// Input from the peer transport: a raft message, with the received snapshot file when the message carries a
/// snapshot (MsgSnap), in one queue so both keep their arrival order.
/// </summary>
internal readonly record struct PeerInput(Message Message, ReceivedSnapshot? Snapshot);

/// <summary>Work that runs on the raft loop with the node (conf changes, leadership transfer, the tick advance).</summary>
internal abstract class LoopWork
{
    /// <summary>Runs on the raft loop, the only thread that touches <paramref name="node"/>.</summary>
    public abstract void Run(RaftNode node);
}
