using System.Buffers.Binary;
using System.Diagnostics;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

public sealed partial class MvccStore
{
    // Filled by the backend's check of the data log while it opens; consumed (and dropped) by Recover.
    private RecoveredRecords? _recovered;

    /// <summary>
    /// After FasterKV recovered its last checkpoint: check its index against the log when its checksums were not
    /// recorded, read the state record, rebuild the key index from the revision records (in revision order), re-apply
    /// the last compaction to it, reload meta buckets. Everything comes from the records the backend's check of the data
    /// log handed over (one sequential read of the log files): nothing is read through FasterKV key by key.
    /// </summary>
    private void Recover()
    {
        var started = Stopwatch.GetTimestamp();
        var recovered = _recovered ?? new RecoveredRecords();
        _recovered = null;
        if (_backend.RecoveredFromCheckpoint)
        {
            // Before anything is read through the recovered index: it must agree with the log.
            _backend.VerifyIndexAgainstLog(_writerSession);
        }

        var verified = Stopwatch.GetTimestamp();
        if (recovered.Others.TryGetValue([StatePrefix], out var state))
        {
            if (state.Length != 28 || BinaryPrimitives.ReadUInt32LittleEndian(state.AsSpan(24)) != Crc32C.Compute(state.AsSpan(0, 24)))
            {
                throw new InvalidDataException($"state record in FasterKV checkpoint under '{_dataDirectory}' fails its checksum");
            }

            _consistentIndex = (long)BinaryPrimitives.ReadUInt64LittleEndian(state);
            _currentRevision = BinaryPrimitives.ReadInt64LittleEndian(state.AsSpan(8));
            _compactRevision = BinaryPrimitives.ReadInt64LittleEndian(state.AsSpan(16));
            _liveBytes += 28 + 1;
        }
        else
        {
            // A fresh store is at revision 1 with nothing in it, as etcd (the first write gets revision 2).
            _currentRevision = 1;
        }

        var records = new List<(Revision Rev, RecoveredRevision Record)>(recovered.Revisions.Count);
        foreach (var (rev, record) in recovered.Revisions)
        {
            if (rev.Main <= _currentRevision)
            {
                records.Add((rev, record));
                _liveBytes += record.Length + 17;
            }
        }

        recovered.Revisions.Clear();
        records.Sort((a, b) => a.Rev.CompareTo(b.Rev));
        var byKey = new Dictionary<byte[], KeyIndex>(ByteKeyComparer.Instance);
        foreach (var (rev, record) in records)
        {
            if (!byKey.TryGetValue(record.Key, out var ki))
            {
                ki = new KeyIndex(record.Key);
                byKey[record.Key] = ki;
                _index.Add(ki);
                if (record.Flag == FlagTombstone)
                {
                    // Older revisions of this key were removed by a compaction that crashed half-way.
                    ki.Restore(rev, rev, 1, lease: 0);
                    ki.Generations.Add(new Generation());
                }
                else
                {
                    ki.Restore(new Revision(record.CreateRevision, 0), rev, record.Version, record.Lease);
                }

                continue;
            }

            if (record.Flag == FlagTombstone)
            {
                if (!ki.Generations[^1].IsEmpty)
                {
                    ki.Tombstone(rev);
                }
            }
            else
            {
                ki.Put(rev, record.Lease);
            }
        }

        if (_compactRevision > 0)
        {
            var doomed = CompactIndex(_compactRevision);
            if (doomed.Count > 0)
            {
                SchedulePhysical(_compactRevision, doomed);
            }
        }

        foreach (var (key, value) in recovered.Others)
        {
            if (key[0] == MetaPrefix && key.AsSpan(1).IndexOf((byte)0) is var sep and >= 0)
            {
                var bucket = System.Text.Encoding.UTF8.GetString(key.AsSpan(1, sep));
                SetMeta(bucket, key.AsSpan(2 + sep).ToArray(), value);
            }
        }

        _logger.LogInformation(
            "MVCC store opened: consistent index {Index}, revision {Revision}, compact revision {Compact}, {Keys} keys, {Records} revision records (index checked key by key in {VerifySeconds:F3}s, key index built in {BuildSeconds:F3}s)",
            ConsistentIndex,
            CurrentRevision,
            CompactRevision,
            _index.Count,
            records.Count,
            Stopwatch.GetElapsedTime(started, verified).TotalSeconds,
            Stopwatch.GetElapsedTime(verified).TotalSeconds);
    }

    /// <summary>
    /// The current state of every key in the recovered log, as the backend's check of the data log reads it (the last
    /// record of a key wins; a deletion removes it): revision records reduced to what the key index needs (the value is
    /// not kept), the state record and meta buckets whole (they are small).
    /// </summary>
    private sealed class RecoveredRecords : ILogRecordSink
    {
        public Dictionary<Revision, RecoveredRevision> Revisions { get; } = [];

        public Dictionary<byte[], byte[]> Others { get; } = new(ByteKeyComparer.Instance);

        public void Record(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
        {
            if (key.Length == 17 && key[0] == RevisionPrefix)
            {
                var kv = KeyValueCodec.Decode(value[1..], keysOnly: true);
                Revisions[RevisionOf(key)] = new RecoveredRevision(value[0], kv.Key, kv.CreateRevision, kv.Version, kv.Lease, value.Length);
            }
            else if (key.Length > 0 && key[0] is MetaPrefix or StatePrefix)
            {
                Others[key.ToArray()] = value.ToArray();
            }
        }

        public void Deleted(ReadOnlySpan<byte> key)
        {
            if (key.Length == 17 && key[0] == RevisionPrefix)
            {
                Revisions.Remove(RevisionOf(key));
            }
            else
            {
                Others.Remove(key.ToArray());
            }
        }

        private static Revision RevisionOf(ReadOnlySpan<byte> key) =>
            new(BinaryPrimitives.ReadInt64BigEndian(key[1..]), BinaryPrimitives.ReadInt64BigEndian(key[9..]));
    }

    /// <summary>A stored revision record as the key index needs it: put or tombstone, the key, its creation, version and lease, and the record's length.</summary>
    private readonly record struct RecoveredRevision(byte Flag, byte[] Key, long CreateRevision, long Version, long Lease, int Length);
}
