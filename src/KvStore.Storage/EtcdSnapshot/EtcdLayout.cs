using System.Buffers.Binary;
using KvStore.Storage.Mvcc;

namespace KvStore.Storage.EtcdSnapshot;

/// <summary>
/// etcd's backend layout (its bbolt buckets) as far as a snapshot carries state between etcd and KvStore:
/// <list type="bullet">
/// <item><c>key</c>: revision key (8-byte big-endian main, '_', 8-byte big-endian sub, plus 't' for a tombstone) →
/// mvccpb.KeyValue (a tombstone's holds only the key).</item>
/// <item><c>meta</c>: <c>consistent_index</c> → u64 big-endian; <c>scheduledCompactRev</c> and
/// <c>finishedCompactRev</c> → revision key of the compaction (sub 0), written once the store was compacted.</item>
/// <item><c>lease</c>: 8-byte big-endian lease ID → leasepb.Lease; <c>members</c>: hex member ID → member JSON;
/// <c>members_removed</c>, <c>cluster</c>, <c>alarm</c>, <c>auth</c>, <c>authUsers</c>, <c>authRoles</c>.</item>
/// </list>
/// </summary>
public static class EtcdLayout
{
    /// <summary>The key bucket.</summary>
    public const string KeyBucket = "key";

    /// <summary>The meta bucket.</summary>
    public const string MetaBucket = "meta";

    /// <summary>Buckets etcd 3.4 creates at start; a snapshot has all of them even when empty.</summary>
    public static readonly IReadOnlyList<string> StandardBuckets =
        ["alarm", "auth", "authRoles", "authUsers", "cluster", KeyBucket, "lease", "members", "members_removed", MetaBucket];

    /// <summary>Meta key of the raft index the backend reflects.</summary>
    public static ReadOnlySpan<byte> ConsistentIndexKey => "consistent_index"u8;

    /// <summary>Meta key of the last compaction asked for.</summary>
    public static ReadOnlySpan<byte> ScheduledCompactKey => "scheduledCompactRev"u8;

    /// <summary>Meta key of the last compaction finished.</summary>
    public static ReadOnlySpan<byte> FinishedCompactKey => "finishedCompactRev"u8;

    /// <summary>etcd's key-bucket key of a revision (18 bytes with the tombstone mark).</summary>
    public static int WriteRevisionKey(Span<byte> dest, Revision revision, bool tombstone)
    {
        revision.WriteBoltKey(dest);
        if (!tombstone)
        {
            return Revision.BoltKeySize;
        }

        dest[Revision.BoltKeySize] = (byte)'t';
        return Revision.BoltKeySize + 1;
    }

    /// <summary>Decodes a key-bucket key; false when it is not one.</summary>
    public static bool TryReadRevisionKey(ReadOnlySpan<byte> key, out Revision revision, out bool tombstone)
    {
        revision = default;
        tombstone = key.Length == Revision.BoltKeySize + 1 && key[Revision.BoltKeySize] == (byte)'t';
        if ((key.Length != Revision.BoltKeySize && !tombstone) || key[8] != (byte)'_')
        {
            return false;
        }

        revision = new Revision(BinaryPrimitives.ReadInt64BigEndian(key), BinaryPrimitives.ReadInt64BigEndian(key[9..]));
        return revision.Main >= 0 && revision.Sub >= 0;
    }
}

/// <summary>
/// Converts the records of our meta buckets to etcd's and back, where the encodings differ (leases, members); the
/// server knows those formats. Both directions may drop a record (return nothing).
/// </summary>
public interface IEtcdMetaMapper
{
    /// <summary>Our meta record as etcd bucket records (never in the key or meta bucket).</summary>
    IEnumerable<MetaRecord> ToEtcd(MetaRecord record);

    /// <summary>An etcd bucket record (other than the key and meta buckets) as our meta records.</summary>
    IEnumerable<MetaRecord> FromEtcd(MetaRecord record);
}
