namespace KvStore.Raft.Tracker;

/// <summary>
/// The last indexes of append messages sent to a follower and not yet acknowledged, oldest first; the window
/// that pauses replication once <see cref="Capacity"/> messages are in flight.
/// </summary>
internal sealed class Inflights(int capacity)
{
    private readonly Queue<ulong> _queue = new();

    public int Capacity { get; } = capacity;

    public int Count => _queue.Count;

    public bool Full => _queue.Count >= Capacity;

    public void Add(ulong lastIndex)
    {
        if (Full)
        {
            throw new RaftInvariantException("raft: cannot add into a full inflights window");
        }

        _queue.Enqueue(lastIndex);
    }

    /// <summary>Frees every message whose last index is ≤ <paramref name="to"/>.</summary>
    public void FreeLE(ulong to)
    {
        while (_queue.Count > 0 && _queue.Peek() <= to)
        {
            _queue.Dequeue();
        }
    }

    public void FreeFirstOne()
    {
        if (_queue.Count > 0)
        {
            _queue.Dequeue();
        }
    }

    public void Reset() => _queue.Clear();
}
