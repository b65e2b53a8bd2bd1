namespace KvStore.Raft;

/// <summary>The application state up to <see cref="SnapshotMetadata.Index"/>, replacing the log before it.</summary>
public sealed class Snapshot
{
    /// <summary>The "no snapshot" value (index 0).</summary>
    public static readonly Snapshot Empty = new();

    /// <summary>Position and membership.</summary>
    public SnapshotMetadata Metadata { get; init; } = new();

    /// <summary>Application-defined state bytes.</summary>
    public ReadOnlyMemory<byte> Data { get; init; }

    /// <summary>True when this is no snapshot at all.</summary>
    public bool IsEmpty => Metadata.Index == 0;

    /// <inheritdoc/>
    public override string ToString() => $"snap@{Metadata.Index}/{Metadata.Term} {Metadata.ConfState}";
}
