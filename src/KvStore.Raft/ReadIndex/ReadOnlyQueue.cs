using KvStore.Raft.Quorum;

namespace KvStore.Raft.ReadIndex;

/// <summary>
/// Leader-side queue of read-index requests awaiting a heartbeat round. A request is released once a majority of
/// voters acknowledged a heartbeat carrying its context (or the context of a later request: heartbeats carry the
/// newest pending context, and an acknowledgement confirms leadership for every earlier request too).
/// </summary>
internal sealed class ReadOnlyQueue
{
    private readonly Dictionary<string, Pending> _pending = [];
    private readonly List<string> _queue = [];

    public bool IsEmpty => _queue.Count == 0;

    public ReadOnlyMemory<byte> LastPendingContext => _queue.Count == 0 ? ReadOnlyMemory<byte>.Empty : _pending[_queue[^1]].Request.Context;

    public static string Key(ReadOnlyMemory<byte> context) => Convert.ToHexString(context.Span);

    /// <summary>Queues a request at <paramref name="index"/> (a duplicate context is ignored).</summary>
    public void Add(ulong index, Message request)
    {
        var key = Key(request.Context);
        if (_pending.ContainsKey(key))
        {
            return;
        }

        _pending[key] = new Pending(index, request);
        _queue.Add(key);
    }

    /// <summary>Records an acknowledgement and reports whether a majority of voters has now acknowledged.</summary>
    public bool Ack(ulong from, ReadOnlyMemory<byte> context, IReadOnlyCollection<ulong> voters)
    {
        if (!_pending.TryGetValue(Key(context), out var p))
        {
            return false;
        }

        p.Acks.Add(from);
        var count = voters.Count(p.Acks.Contains);
        return count >= MajorityQuorum.Size(voters.Count);
    }

    /// <summary>Releases every request up to and including the one with <paramref name="context"/>.</summary>
    public List<(ulong Index, Message Request)> Advance(ReadOnlyMemory<byte> context)
    {
        var released = new List<(ulong, Message)>();
        var key = Key(context);
        var at = _queue.IndexOf(key);
        if (at < 0)
        {
            return released;
        }

        for (var i = 0; i <= at; i++)
        {
            var p = _pending[_queue[i]];
            _pending.Remove(_queue[i]);
            released.Add((p.Index, p.Request));
        }

        _queue.RemoveRange(0, at + 1);
        return released;
    }

    public void Clear()
    {
        _pending.Clear();
        _queue.Clear();
    }

    private sealed class Pending(ulong index, Message request)
    {
        public ulong Index { get; } = index;

        public Message Request { get; } = request;

        public HashSet<ulong> Acks { get; } = [];
    }
}
