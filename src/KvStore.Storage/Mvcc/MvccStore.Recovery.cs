using System.Buffers.Binary;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

public sealed partial class MvccStore
{
    /// <summary>
    /// After FasterKV recovered its last checkpoint: check its index against the log, read the state record, rebuild the key index from the
    /// revision records (in revision order), re-apply the last compaction to it, reload meta buckets.
    /// </summary>
    private void Recover()
    {
        if (_backend.RecoveredFromCheckpoint)
        {
            // Before anything is read through the recovered index: it must agree with the log.
            _backend.VerifyIndexAgainstLog(_writerSession);
        }

        if (FasterBackend.TryRead(_writerSession, [StatePrefix], out var state))
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

        var records = new List<(Revision Rev, byte[] Record)>();
        foreach (var key in _backend.ScanKeys(RevisionPrefix))
        {
            if (key.Length == 17 && FasterBackend.TryRead(_writerSession, key, out var record))
            {
                var rev = new Revision(BinaryPrimitives.ReadInt64BigEndian(key.AsSpan(1)), BinaryPrimitives.ReadInt64BigEndian(key.AsSpan(9)));
                if (rev.Main <= _currentRevision)
                {
                    records.Add((rev, record));
                    _liveBytes += record.Length + 17;
                }
            }
        }

        records.Sort((a, b) => a.Rev.CompareTo(b.Rev));
        var byKey = new Dictionary<byte[], KeyIndex>(ByteArrayComparer.Instance);
        foreach (var (rev, record) in records)
        {
            var kv = KeyValueCodec.Decode(record.AsSpan(1), keysOnly: true);
            if (!byKey.TryGetValue(kv.Key, out var ki))
            {
                ki = new KeyIndex(kv.Key);
                byKey[kv.Key] = ki;
                _index.Add(ki);
                if (record[0] == FlagTombstone)
                {
                    // Older revisions of this key were removed by a compaction that crashed half-way.
                    ki.Restore(rev, rev, 1);
                    ki.Generations.Add(new Generation());
                }
                else
                {
                    ki.Restore(new Revision(kv.CreateRevision, 0), rev, kv.Version);
                }

                continue;
            }

            if (record[0] == FlagTombstone)
            {
                if (!ki.Generations[^1].IsEmpty)
                {
                    ki.Tombstone(rev);
                }
            }
            else
            {
                ki.Put(rev);
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

        foreach (var key in _backend.ScanKeys(MetaPrefix))
        {
            if (FasterBackend.TryRead(_writerSession, key, out var value))
            {
                var sep = key.AsSpan(1).IndexOf((byte)0);
                if (sep >= 0)
                {
                    var bucket = System.Text.Encoding.UTF8.GetString(key.AsSpan(1, sep));
                    SetMeta(bucket, key.AsSpan(2 + sep).ToArray(), value);
                }
            }
        }

        _logger.LogInformation(
            "MVCC store opened: consistent index {Index}, revision {Revision}, compact revision {Compact}, {Keys} keys, {Records} revision records",
            ConsistentIndex,
            CurrentRevision,
            CompactRevision,
            _index.Count,
            records.Count);
    }
}
