using System.Buffers.Binary;
using KvStore.Storage.Backend;
using KvStore.Storage.Bolt;
using KvStore.Storage.Mvcc;

namespace KvStore.Storage.EtcdSnapshot;

/// <summary>What a written snapshot holds.</summary>
public sealed record EtcdSnapshotSummary(long Revision, long CompactRevision, long Revisions, long SizeBytes);

/// <summary>
/// Writes a point-in-time view of the store (<see cref="MvccStore.ExportAsync{T}"/>) as an etcd backend database: a
/// bbolt file with etcd's buckets (<see cref="EtcdLayout"/>), which etcd's tools read and restore. The SHA-256
/// trailer of the Snapshot RPC is added by whoever streams the file.
/// </summary>
public static class EtcdSnapshotWriter
{
    /// <summary>Writes the database into the empty seekable <paramref name="output"/>.</summary>
    public static EtcdSnapshotSummary Write(StoreViewHeader view, IEnumerable<RevisionRecord> revisions, Stream output, IEtcdMetaMapper mapper)
    {
        ArgumentNullException.ThrowIfNull(view);
        ArgumentNullException.ThrowIfNull(revisions);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(mapper);

        var buckets = new SortedDictionary<string, SortedDictionary<byte[], byte[]>>(StringComparer.Ordinal);
        foreach (var name in EtcdLayout.StandardBuckets)
        {
            buckets[name] = new SortedDictionary<byte[], byte[]>(ByteKeyComparer.Instance);
        }

        foreach (var record in view.Meta)
        {
            foreach (var mapped in mapper.ToEtcd(record))
            {
                if (mapped.Bucket is EtcdLayout.KeyBucket or EtcdLayout.MetaBucket)
                {
                    throw new InvalidOperationException($"meta bucket '{record.Bucket}' must not map into etcd's '{mapped.Bucket}' bucket");
                }

                if (!buckets.TryGetValue(mapped.Bucket, out var bucket))
                {
                    bucket = new SortedDictionary<byte[], byte[]>(ByteKeyComparer.Instance);
                    buckets[mapped.Bucket] = bucket;
                }

                bucket[mapped.Key] = mapped.Value;
            }
        }

        var meta = buckets[EtcdLayout.MetaBucket];
        var index = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(index, view.ConsistentIndex);
        meta[EtcdLayout.ConsistentIndexKey.ToArray()] = index;
        if (view.CompactRevision > 0)
        {
            // etcd records a compaction as scheduled before it starts and finished after it; ours is complete.
            var compact = new byte[Revision.BoltKeySize];
            new Revision(view.CompactRevision, 0).WriteBoltKey(compact);
            meta[EtcdLayout.ScheduledCompactKey.ToArray()] = compact;
            meta[EtcdLayout.FinishedCompactKey.ToArray()] = compact;
        }

        var writer = new BoltWriter(output);
        long count = 0;
        Span<byte> key = stackalloc byte[Revision.BoltKeySize + 1];
        foreach (var (name, records) in buckets)
        {
            writer.BeginBucket(System.Text.Encoding.UTF8.GetBytes(name));
            if (name == EtcdLayout.KeyBucket)
            {
                foreach (var record in revisions)
                {
                    var length = EtcdLayout.WriteRevisionKey(key, record.Revision, record.Tombstone);
                    writer.Put(key[..length], record.KeyValue.Span);
                    count++;
                }
            }
            else
            {
                foreach (var (k, v) in records)
                {
                    writer.Put(k, v);
                }
            }

            writer.EndBucket();
        }

        writer.Finish();
        return new EtcdSnapshotSummary(view.Revision, view.CompactRevision, count, (long)writer.PageCount * BoltFormat.DefaultPageSize);
    }
}
