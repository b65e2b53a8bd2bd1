namespace KvStore.Server.Lease;

/// <summary>Orders and hashes keys as etcd does: unsigned bytewise.</summary>
public sealed class ByteKeyComparer : IEqualityComparer<byte[]>, IComparer<byte[]>
{
    /// <summary>The shared instance.</summary>
    public static readonly ByteKeyComparer Instance = new();

    /// <inheritdoc/>
    public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y.AsSpan());

    /// <inheritdoc/>
    public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y.AsSpan());

    /// <inheritdoc/>
    public int GetHashCode(byte[] obj)
    {
        var hash = new HashCode();
        hash.AddBytes(obj);
        return hash.ToHashCode();
    }
}
