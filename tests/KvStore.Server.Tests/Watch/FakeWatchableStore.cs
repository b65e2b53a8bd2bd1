using KvStore.Server.Watch;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Tests.Watch;

/// <summary>
/// An in-memory MVCC history for the watch hub: writes produce etcd-shaped events (create/mod revision, version),
/// compaction drops history below a revision. <see cref="Commit"/> writes one txn and notifies the hub like the applier.
/// </summary>
public sealed class FakeWatchableStore : IWatchableStore
{
    private readonly List<MvccEvent> _history = [];
    private readonly Dictionary<string, KeyValue> _live = [];
    private readonly Lock _lock = new();

    public long CurrentRevision { get; private set; }

    public long CompactRevision { get; private set; }

    public static (string Key, string? Value) Put(string key, string value) => (key, value);

    public static (string Key, string? Value) Del(string key) => (key, null);

    /// <summary>Applies one write txn (value null = delete) and returns its events; does not notify.</summary>
    public IReadOnlyList<MvccEvent> Write(params (string Key, string? Value)[] changes)
    {
        lock (_lock)
        {
            return WriteLocked(changes);
        }
    }

    private List<MvccEvent> WriteLocked((string Key, string? Value)[] changes)
    {
        var revision = CurrentRevision + 1;
        var events = new List<MvccEvent>();
        foreach (var (key, value) in changes)
        {
            if (value is null)
            {
                if (_live.Remove(key))
                {
                    events.Add(new MvccEvent(EventType.Delete, new KeyValue { Key = Bytes(key), ModRevision = revision }));
                }

                continue;
            }

            _live.TryGetValue(key, out var previous);
            var kv = new KeyValue
            {
                Key = Bytes(key),
                Value = Bytes(value),
                CreateRevision = previous?.CreateRevision ?? revision,
                ModRevision = revision,
                Version = (previous?.Version ?? 0) + 1,
            };
            _live[key] = kv;
            events.Add(new MvccEvent(EventType.Put, kv));
        }

        if (events.Count > 0)
        {
            CurrentRevision = revision;
            _history.AddRange(events);
        }

        return events;
    }

    /// <summary>Writes and notifies the hub as the applier does.</summary>
    public void Commit(WatchHub hub, params (string Key, string? Value)[] changes)
    {
        var events = Write(changes);
        if (events.Count > 0)
        {
            hub.OnCommitted(CurrentRevision, events);
        }
    }

    public void Compact(long revision)
    {
        lock (_lock)
        {
            CompactRevision = revision;
            _history.RemoveAll(e => e.Kv.ModRevision < revision);
        }
    }

    /// <summary>Runs once at the start of the next <see cref="ReadEvents"/> (e.g. a commit racing a catch-up read).</summary>
    public Action? BeforeNextRead { get; set; }

    public IReadOnlyList<MvccEvent> ReadEvents(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, long fromRevision, long toRevision, int maxEvents)
    {
        var before = BeforeNextRead;
        BeforeNextRead = null;
        before?.Invoke();
        if (fromRevision < CompactRevision)
        {
            throw new InvalidOperationException("compacted");
        }

        var k = key.ToArray();
        var end = rangeEnd.ToArray();
        lock (_lock)
        {
            return ReadLocked(k, end, fromRevision, toRevision, maxEvents);
        }
    }

    private List<MvccEvent> ReadLocked(byte[] k, byte[] end, long fromRevision, long toRevision, int maxEvents)
    {
        return _history
            .Where(e => e.Kv.ModRevision >= fromRevision && e.Kv.ModRevision <= toRevision && InRange(e.Kv.Key, k, end))
            .Take(maxEvents)
            .ToList();
    }

    public KeyValue? ReadAt(byte[] key, long revision)
    {
        MvccEvent? last;
        lock (_lock)
        {
            last = _history.LastOrDefault(e => e.Kv.ModRevision <= revision && e.Kv.Key.AsSpan().SequenceEqual(key));
        }

        return last is { Type: EventType.Put } ? last.Kv : null;
    }

    public static byte[] Bytes(string s) => System.Text.Encoding.UTF8.GetBytes(s);

    private static bool InRange(byte[] candidate, byte[] key, byte[] end)
    {
        if (end.Length == 0)
        {
            return candidate.AsSpan().SequenceEqual(key);
        }

        if (candidate.AsSpan().SequenceCompareTo(key) < 0)
        {
            return false;
        }

        return (end.Length == 1 && end[0] == 0) || candidate.AsSpan().SequenceCompareTo(end) < 0;
    }
}
