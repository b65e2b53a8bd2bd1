using System.Buffers.Binary;

namespace KvStore.Storage.Mvcc;

/// <summary>
/// A revision: Main is the write transaction, Sub the change inside it. Encoded big-endian (etcd's bolt key:
/// 8-byte main, '_', 8-byte sub, 't' appended for tombstones), so byte order is revision order.
/// </summary>
public readonly record struct Revision(long Main, long Sub) : IComparable<Revision>
{
    public const int BoltKeySize = 17;

    public int CompareTo(Revision other) => Main != other.Main ? Main.CompareTo(other.Main) : Sub.CompareTo(other.Sub);

    public static bool operator <(Revision a, Revision b) => a.CompareTo(b) < 0;

    public static bool operator >(Revision a, Revision b) => a.CompareTo(b) > 0;

    public static bool operator <=(Revision a, Revision b) => a.CompareTo(b) <= 0;

    public static bool operator >=(Revision a, Revision b) => a.CompareTo(b) >= 0;

    public void WriteBoltKey(Span<byte> dest)
    {
        BinaryPrimitives.WriteInt64BigEndian(dest, Main);
        dest[8] = (byte)'_';
        BinaryPrimitives.WriteInt64BigEndian(dest[9..], Sub);
    }

    public override string ToString() => $"{Main}_{Sub}";
}
