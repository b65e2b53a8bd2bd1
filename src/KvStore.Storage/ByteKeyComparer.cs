namespace KvStore.Storage;

/// <summary>Orders and hashes keys (and values) as etcd does: unsigned bytewise, as Go's bytes.Compare.</summary>
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
