using System.Buffers.Binary;
using KvStore.Raft;
using KvStore.Server.Node;

namespace KvStore.Server.Replication;

/// <summary>
/// The linearizable read barrier (etcd's ReadIndex reads). Concurrent readers join one batch; the raft loop sends a
/// ReadIndex for it, and once the leader confirms an index every reader of the batch waits until this member has
/// applied up to it. Readers call <see cref="WaitAsync"/> from any thread; the other methods run on the raft loop only,
/// which sends each ReadIndex through the delegate it passes (so this class needs no Raft node and is tested alone).
/// </summary>
internal sealed class ReadBarrier(NodeState state, ProgressSignals progress, TimeSpan requestTimeout, Action requestIssue)
{
    /// <summary>Retry period in ticks (etcd asks an unanswered ReadIndex again every 500 ms).</summary>
    public const int RetryTicks = 5;

    /// <summary>Ticks after which an unanswered batch is dropped (its readers have timed out long before).</summary>
    public const int AbandonTicks = 1000;

    private readonly Dictionary<ulong, ReadBatch> _inFlight = [];
    private ReadBatch? _pending;
    private ulong _nextContext;

    /// <summary>Batches sent and not yet answered (raft loop; tests).</summary>
    public int InFlight => _inFlight.Count;

    /// <summary>
    /// Waits until a read started now would see every write acknowledged before it: joins the batch not yet sent (the
    /// first to join asks the raft loop to send it), then waits for the leader's index and for this member to apply it.
    /// </summary>
    public async Task WaitAsync(CancellationToken cancellationToken)
    {
        var batch = Join(out var isNew);
        if (isNew)
        {
            requestIssue();
        }

        ulong index;
        try
        {
            index = await batch.Index.Task.WaitAsync(requestTimeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            throw (state.HasLeader ? EtcdErrors.Timeout : ClusterErrors.TimeoutLeaderFail).Exception();
        }

        if (state.AppliedIndex >= index)
        {
            return;
        }

        try
        {
            await progress.WaitAppliedAsync(index, cancellationToken).WaitAsync(requestTimeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            throw EtcdErrors.TimeoutWaitAppliedIndex.Exception();
        }
    }

    /// <summary>Raft loop: sends the batch readers have joined since the last one, if any.</summary>
    public void IssuePending(Action<ReadOnlyMemory<byte>> readIndex, long ticks)
    {
        if (Interlocked.Exchange(ref _pending, null) is not { } batch)
        {
            return;
        }

        batch.Context = ++_nextContext;
        _inFlight[batch.Context] = batch;
        Send(readIndex, batch, ticks);
    }

    /// <summary>Raft loop, every tick: asks again for batches unanswered for a while (a forwarded ReadIndex may be lost).</summary>
    public void OnTick(Action<ReadOnlyMemory<byte>> readIndex, long ticks)
    {
        if (_inFlight.Count == 0)
        {
            return;
        }

        List<ulong>? done = null;
        foreach (var (context, batch) in _inFlight)
        {
            if (batch.Index.Task.IsCompleted || ticks - batch.IssuedAtTick > AbandonTicks)
            {
                (done ??= []).Add(context);
            }
            else if (ticks - batch.IssuedAtTick >= RetryTicks)
            {
                Send(readIndex, batch, ticks);
            }
        }

        foreach (var context in done ?? [])
        {
            _inFlight.Remove(context);
        }
    }

    /// <summary>Raft loop: a leader is known again; batches sent while there was none (or to the old one) go to it now.</summary>
    public void OnNewLeader(Action<ReadOnlyMemory<byte>> readIndex, long ticks)
    {
        foreach (var batch in _inFlight.Values)
        {
            if (!batch.Index.Task.IsCompleted)
            {
                Send(readIndex, batch, ticks);
            }
        }
    }

    /// <summary>Raft loop: the read states of a Ready; each answers the batch its context names.</summary>
    public void Complete(IReadOnlyList<ReadState> readStates)
    {
        foreach (var read in readStates)
        {
            if (read.Context.Length == 8 && _inFlight.Remove(BinaryPrimitives.ReadUInt64BigEndian(read.Context.Span), out var batch))
            {
                batch.Index.TrySetResult(read.Index);
            }
        }
    }

    /// <summary>Fails the batch not yet sent (the member stops; those in flight time out with their readers).</summary>
    public void FailPending(EtcdError error) => Interlocked.Exchange(ref _pending, null)?.Index.TrySetException(error.Exception());

    private static void Send(Action<ReadOnlyMemory<byte>> readIndex, ReadBatch batch, long ticks)
    {
        batch.IssuedAtTick = ticks;
        var context = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(context, batch.Context);
        readIndex(context);
    }

    /// <summary>The batch not yet sent, creating it when there is none (then <paramref name="isNew"/> is true).</summary>
    private ReadBatch Join(out bool isNew)
    {
        while (true)
        {
            var current = Volatile.Read(ref _pending);
            if (current is not null)
            {
                isNew = false;
                return current;
            }

            var created = new ReadBatch();
            if (Interlocked.CompareExchange(ref _pending, created, null) is null)
            {
                isNew = true;
                return created;
            }
        }
    }

    /// <summary>A group of linearizable readers sharing one ReadIndex request.</summary>
    private sealed class ReadBatch
    {
        public TaskCompletionSource<ulong> Index { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ulong Context { get; set; }

        public long IssuedAtTick { get; set; }
    }
}
