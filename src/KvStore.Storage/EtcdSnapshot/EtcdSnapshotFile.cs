using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KvStore.Storage.Bolt;
using KvStore.Storage.Mvcc;

namespace KvStore.Storage.EtcdSnapshot;

/// <summary>etcd's <c>snapshot status</c> figures: CRC-32C over every bucket name, key and value in order, the main
/// revision of the last key-bucket key, the number of keys in all buckets, and the database size.</summary>
public sealed record EtcdSnapshotStatus(uint Hash, long Revision, long TotalKey, long TotalSize);

/// <summary>The state an etcd snapshot holds, as records for <see cref="MvccStore.WriteImage"/>.</summary>
public sealed record EtcdSnapshotContent(long Revision, long CompactRevision, ulong ConsistentIndex);

/// <summary>
/// Reading snapshot files (etcd's and ours, both bbolt): the SHA-256 trailer the Snapshot RPC appends, the status
/// figures, and the content for a restore.
/// </summary>
public static class EtcdSnapshotFile
{
    /// <summary>Bytes of the SHA-256 trailer.</summary>
    public const int HashSize = 32;

    /// <summary>
    /// Checks the SHA-256 trailer as etcd's restore does: a file whose size modulo 512 is 32 ends with the SHA-256 of
    /// what precedes it, which must match; a file without one is refused unless <paramref name="skipHashCheck"/>
    /// (a database copied from a data directory has none). Returns the size of the database part.
    /// </summary>
    /// <exception cref="InvalidDataException">The trailer is missing or does not match.</exception>
    public static long VerifyHash(string path, bool skipHashCheck)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        var length = stream.Length;
        var hasHash = length % 512 == HashSize;
        if (!hasHash)
        {
            return skipHashCheck
                ? length
                : throw new InvalidDataException("snapshot missing hash but --skip-hash-check=false");
        }

        var dataLength = length - HashSize;
        if (skipHashCheck)
        {
            return dataLength;
        }

        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        var remaining = dataLength;
        while (remaining > 0)
        {
            var read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, remaining));
            if (read == 0)
            {
                throw new EndOfStreamException();
            }

            sha.AppendData(buffer, 0, read);
            remaining -= read;
        }

        var stored = new byte[HashSize];
        stream.ReadExactly(stored);
        var computed = sha.GetHashAndReset();
        if (!computed.AsSpan().SequenceEqual(stored))
        {
            throw new InvalidDataException($"expected sha256 {Convert.ToHexStringLower(stored)}, got {Convert.ToHexStringLower(computed)}");
        }

        return dataLength;
    }

    /// <summary>The figures of <c>etcdctl snapshot status</c>.</summary>
    public static EtcdSnapshotStatus Status(BoltReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var crc = Crc32C.Create();
        long revision = 0, total = 0;
        foreach (var bucket in reader.BucketNames)
        {
            crc.Append(Encoding.UTF8.GetBytes(bucket));
            var isKey = bucket == EtcdLayout.KeyBucket;
            foreach (var (key, value) in reader.Read(bucket))
            {
                crc.Append(key);
                crc.Append(value);
                if (isKey && key.Length >= 8)
                {
                    revision = BinaryPrimitives.ReadInt64BigEndian(key);
                }

                total++;
            }
        }

        return new EtcdSnapshotStatus(crc.Current, revision, total, (long)reader.PageCount * reader.PageSize);
    }

    /// <summary>
    /// The scalar state of an etcd backend: revision = max(last key-bucket revision, compaction), compact revision =
    /// the later of the scheduled and finished compactions (a scheduled one that had not finished is redone when the
    /// store opens, as etcd redoes it), and the consistent index.
    /// </summary>
    public static EtcdSnapshotContent ReadContent(BoltReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        if (!reader.HasBucket(EtcdLayout.KeyBucket))
        {
            throw new InvalidDataException("not an etcd snapshot: the database has no 'key' bucket");
        }

        long compact = 0;
        ulong index = 0;
        foreach (var (key, value) in reader.Read(EtcdLayout.MetaBucket))
        {
            if (key.AsSpan().SequenceEqual(EtcdLayout.ConsistentIndexKey) && value.Length == 8)
            {
                index = BinaryPrimitives.ReadUInt64BigEndian(value);
            }
            else if ((key.AsSpan().SequenceEqual(EtcdLayout.ScheduledCompactKey) || key.AsSpan().SequenceEqual(EtcdLayout.FinishedCompactKey)) &&
                     value.Length >= 8)
            {
                compact = Math.Max(compact, BinaryPrimitives.ReadInt64BigEndian(value));
            }
        }

        long last = 0;
        if (reader.LastKey(EtcdLayout.KeyBucket) is { } lastKey)
        {
            last = EtcdLayout.TryReadRevisionKey(lastKey, out var revision, out _)
                ? revision.Main
                : throw new InvalidDataException($"the key bucket holds a key that is not a revision: {Convert.ToHexString(lastKey)}");
        }

        return new EtcdSnapshotContent(Math.Max(Math.Max(last, compact), 1), compact, index);
    }

    /// <summary>The key bucket as revision records, ascending.</summary>
    public static IEnumerable<RevisionRecord> Revisions(BoltReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        foreach (var (key, value) in reader.Read(EtcdLayout.KeyBucket))
        {
            if (!EtcdLayout.TryReadRevisionKey(key, out var revision, out var tombstone))
            {
                throw new InvalidDataException($"the key bucket holds a key that is not a revision: {Convert.ToHexString(key)}");
            }

            yield return new RevisionRecord(revision, tombstone, value);
        }
    }

    /// <summary>Every record of the buckets other than key and meta, through <paramref name="mapper"/>.</summary>
    public static IEnumerable<MetaRecord> MetaRecords(BoltReader reader, IEtcdMetaMapper mapper)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(mapper);
        foreach (var bucket in reader.BucketNames)
        {
            if (bucket is EtcdLayout.KeyBucket or EtcdLayout.MetaBucket)
            {
                continue;
            }

            foreach (var (key, value) in reader.Read(bucket))
            {
                foreach (var mapped in mapper.FromEtcd(new MetaRecord(bucket, key, value)))
                {
                    yield return mapped;
                }
            }
        }
    }
}
