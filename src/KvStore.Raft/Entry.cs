namespace KvStore.Raft;

/// <summary>One slot of the replicated log. Immutable once created; persisted by the storage layer.</summary>
public sealed class Entry
{
    /// <summary>Position in the log, starting at 1.</summary>
    public ulong Index { get; init; }

    /// <summary>Term of the leader that created the entry.</summary>
    public ulong Term { get; init; }

    /// <summary>Normal data or a membership change.</summary>
    public EntryType Type { get; init; }

    /// <summary>Opaque payload (empty for a leader's no-op entry).</summary>
    public ReadOnlyMemory<byte> Data { get; init; }

    /// <summary>Approximate size used for message and batch limits.</summary>
    internal ulong Size => (ulong)Data.Length + 24;

    /// <inheritdoc/>
    public override string ToString() => $"{Index}/{Term}{(Type == EntryType.ConfChange ? "cc" : string.Empty)}({Data.Length}b)";
}
