using KvStore.Storage.Mvcc;

namespace KvStore.Server.Watch;

/// <summary>Where a watcher is in the hub (etcd's watcher groups).</summary>
internal enum WatcherGroup
{
    /// <summary>Being created, in no group yet.</summary>
    New,

    /// <summary>Has every event below the hub's revision; gets new events straight from the apply thread.</summary>
    Synced,

    /// <summary>Behind (history replay, or its stream's buffer overflowed): caught up from the store by the sync loop.</summary>
    Unsynced,

    /// <summary>Cancelled or compacted; gets nothing more.</summary>
    Removed,
}

/// <summary>One watch on a stream. Mutable fields are guarded by the hub's lock.</summary>
internal sealed class Watcher
{
    public required WatchSession Stream { get; init; }

    public required long Id { get; init; }

    /// <summary>First key.</summary>
    public required byte[] Key { get; init; }

    /// <summary>Null = the single key <see cref="Key"/>; empty = every key ≥ <see cref="Key"/>; else [Key, RangeEnd).</summary>
    public required byte[]? RangeEnd { get; init; }

    public bool NoPut { get; init; }

    public bool NoDelete { get; init; }

    public bool PrevKv { get; init; }

    public bool ProgressNotify { get; init; }

    public bool Fragment { get; init; }

    /// <summary>The lowest revision this watcher still has to receive.</summary>
    public long MinRevision { get; set; }

    public WatcherGroup Group { get; set; }

    /// <summary>Cleared when events are queued; a progress tick only notifies a watcher that stayed quiet.</summary>
    public bool ProgressDue { get; set; } = true;

    public bool IsSingleKey => RangeEnd is null;

    public bool Matches(byte[] key)
    {
        if (RangeEnd is null)
        {
            return key.AsSpan().SequenceEqual(Key);
        }

        if (key.AsSpan().SequenceCompareTo(Key) < 0)
        {
            return false;
        }

        return RangeEnd.Length == 0 || key.AsSpan().SequenceCompareTo(RangeEnd) < 0;
    }

    /// <summary>The events this watcher wants (filters applied); the input list when nothing is filtered out.</summary>
    public IReadOnlyList<MvccEvent> Filter(IReadOnlyList<MvccEvent> events)
    {
        if (!NoPut && !NoDelete)
        {
            return events;
        }

        var kept = new List<MvccEvent>(events.Count);
        foreach (var e in events)
        {
            if ((e.Type == EventType.Put && !NoPut) || (e.Type == EventType.Delete && !NoDelete))
            {
                kept.Add(e);
            }
        }

        return kept;
    }

    /// <summary>The range in the store's form: empty = single key, "\0" = from key, else the end.</summary>
    public ReadOnlySpan<byte> StoreRangeEnd => RangeEnd switch
    {
        null => [],
        { Length: 0 } => FromKeyEnd,
        _ => RangeEnd,
    };

    private static ReadOnlySpan<byte> FromKeyEnd => [0];
}
