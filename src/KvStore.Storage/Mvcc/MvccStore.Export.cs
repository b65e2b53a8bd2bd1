using System.Buffers.Binary;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

/// <summary>One record of a meta bucket (leases, members, ...).</summary>
public readonly record struct MetaRecord(string Bucket, byte[] Key, byte[] Value);

/// <summary>
/// One stored revision: the key-value written at it (mvccpb.KeyValue bytes), or a tombstone (only the key). Records
/// an export enumerates share buffers: copy the bytes to keep them past the next record.
/// </summary>
public readonly record struct RevisionRecord(Revision Revision, bool Tombstone, ReadOnlyMemory<byte> KeyValue);

/// <summary>The scalar state and meta buckets of a point-in-time view of the store.</summary>
public sealed record StoreViewHeader(ulong ConsistentIndex, long Revision, long CompactRevision, int RevisionCount, IReadOnlyList<MetaRecord> Meta);

/// <summary>
/// Point-in-time views for export (etcd snapshots, the internal snapshot file) and building a store from records
/// (restore from an etcd snapshot).
/// </summary>
public sealed partial class MvccStore
{
    /// <summary>
    /// Runs <paramref name="export"/> on a consistent view of the whole store: the state, the meta buckets and the list
    /// of stored revisions are taken between two write txns (the writer waits only for that), then the callback reads
    /// the revision records, ascending, lazily, on the background maintenance chain, so physical and log compaction
    /// cannot remove a record meanwhile while writes go on. The records are every revision the key index holds (the
    /// history after the compact revision plus what compaction keeps), so a store built from them answers reads at
    /// any revision &gt;= the compact revision and HashKV exactly as this one.
    /// </summary>
    public Task<T> ExportAsync<T>(Func<StoreViewHeader, IEnumerable<RevisionRecord>, T> export)
    {
        ArgumentNullException.ThrowIfNull(export);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return RunOnMaintenanceChain(() => ExportOnChain(export));
    }

    /// <summary>
    /// Builds a new store in the empty or missing directory <paramref name="options"/>.DataDirectory from records
    /// (revisions in any order, meta records) and the given state, and checkpoints it; the directory then opens with
    /// <see cref="Open"/>. Revisions above <paramref name="revision"/> are refused; <see cref="Open"/> re-applies the
    /// compaction at <paramref name="compactRevision"/> to the key index (and deletes what it drops).
    /// </summary>
    public static void WriteImage(
        MvccStoreOptions options,
        ILogger logger,
        ulong consistentIndex,
        long revision,
        long compactRevision,
        IEnumerable<RevisionRecord> revisions,
        IEnumerable<MetaRecord> meta)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(revisions);
        ArgumentNullException.ThrowIfNull(meta);
        var dir = Path.GetFullPath(options.DataDirectory);
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
        {
            throw new IOException($"cannot build a store in '{dir}': the directory is not empty");
        }

        Directory.CreateDirectory(dir);
        using var backend = new FasterBackend(dir, options.IndexBuckets, options.MemorySizeBits, options.PageSizeBits, options.SegmentSizeBits, logger);
        using (var session = backend.NewSession())
        {
            Span<byte> rk = stackalloc byte[17];
            byte[] record = [];
            foreach (var r in revisions)
            {
                if (r.Revision.Main > revision || r.Revision.Main < 1 || r.Revision.Sub < 0)
                {
                    throw new InvalidDataException($"revision {r.Revision} is outside [1, {revision}]");
                }

                if (record.Length < r.KeyValue.Length + 1)
                {
                    record = new byte[r.KeyValue.Length + 1];
                }

                record[0] = r.Tombstone ? FlagTombstone : FlagPut;
                r.KeyValue.Span.CopyTo(record.AsSpan(1));
                WriteRevisionKey(rk, r.Revision);
                FasterBackend.Upsert(session, rk, record.AsSpan(0, r.KeyValue.Length + 1));
            }

            foreach (var m in meta)
            {
                FasterBackend.Upsert(session, MetaKey(m.Bucket, m.Key), m.Value);
            }

            var state = new byte[28];
            BinaryPrimitives.WriteUInt64LittleEndian(state, consistentIndex);
            BinaryPrimitives.WriteInt64LittleEndian(state.AsSpan(8), revision);
            BinaryPrimitives.WriteInt64LittleEndian(state.AsSpan(16), compactRevision);
            BinaryPrimitives.WriteUInt32LittleEndian(state.AsSpan(24), Crc32C.Compute(state.AsSpan(0, 24)));
            FasterBackend.Upsert(session, [StatePrefix], state);
        }

        backend.Checkpoint();
        SyncTree(dir);
    }

    private T ExportOnChain<T>(Func<StoreViewHeader, IEnumerable<RevisionRecord>, T> export)
    {
        var (header, revisions) = CaptureView();
        return export(header, ReadRevisionRecords(revisions));
    }

    /// <summary>Tests: called after a view's state is taken and before its revisions are listed while writes go on.</summary>
    internal Action? OnViewListingForTest { get; set; }

    /// <summary>
    /// State, meta and the sorted revision list as of one point between write txns. Only the state and meta are read
    /// with the writer held off; the revisions up to that point's revision are listed while writes go on (listing
    /// every revision of a large store with the writer held off stalled every put for its whole length). A compaction
    /// during the listing may have dropped some of them, so then the view is taken again; after two such races the
    /// listing holds the writer off too.
    /// </summary>
    private (StoreViewHeader Header, List<Revision> Revisions) CaptureView()
    {
        const int ListingsWhileWriting = 2;
        for (var attempt = 1; ; attempt++)
        {
            var holdWriter = attempt > ListingsWhileWriting;
            List<Revision>? revisions = null;
            List<MetaRecord> meta;
            ulong index;
            long current, compact;
            _txnGate.EnterHolder();
            try
            {
                index = ConsistentIndex;
                current = CurrentRevision;
                compact = CompactRevision;
                lock (_meta)
                {
                    meta = [.. _meta.SelectMany(b => b.Value.Select(kv => new MetaRecord(b.Key, kv.Key.ToArray(), kv.Value.ToArray())))];
                }

                if (holdWriter)
                {
                    revisions = IndexedRevisionsUpTo(current, paced: false);
                }
            }
            finally
            {
                _txnGate.Exit();
            }

            if (revisions is null)
            {
                OnViewListingForTest?.Invoke();
                revisions = IndexedRevisionsUpTo(current, paced: true);
            }

            if (CompactRevision != compact)
            {
                continue;
            }

            revisions.Sort();
            return (new StoreViewHeader(index, current, compact, revisions.Count, meta), revisions);
        }
    }

    /// <summary>
    /// The records of <paramref name="revisions"/>, in order (see <see cref="ReadStoredValues"/> for how long a
    /// record's bytes stay valid).
    /// </summary>
    private IEnumerable<RevisionRecord> ReadRevisionRecords(List<Revision> revisions)
    {
        foreach (var (rev, stored) in ReadStoredValues(revisions))
        {
            if (stored.IsEmpty)
            {
                throw new InvalidOperationException($"revision {rev} is in the key index but missing from FasterKV");
            }

            yield return new RevisionRecord(rev, stored.Span[0] == FlagTombstone, stored[1..]);
        }
    }

    /// <summary>
    /// The stored values (flag byte first) of <paramref name="revisions"/>, in order, read 64 at a time; a revision
    /// FasterKV does not hold comes with an empty value. The bytes are valid until the enumeration moves past their
    /// batch: they lie in a buffer reused by the next one (a copy per record was most of what a snapshot save
    /// allocated, and the garbage collections it caused stalled puts).
    /// </summary>
    /// <remarks>
    /// Each read of an evicted record is a disk read and work items on the thread pool, which the client requests share:
    /// batches of 1,024 queued a thousand of each ahead of them. With 64 the put p99 during a loaded defragment fell from
    /// ~16.6 to ~12 ms and puts went on ~45% faster, while a save with no load is as fast as before.
    /// </remarks>
    private IEnumerable<(Revision Revision, ReadOnlyMemory<byte> Stored)> ReadStoredValues(List<Revision> revisions)
    {
        const int batch = 64;
        using var session = _backend.NewSession();
        var keys = new List<byte[]>(batch);
        for (var i = 0; i < batch; i++)
        {
            keys.Add(new byte[17]);
        }

        var values = new byte[1 << 20];
        var found = new Range?[batch];
        for (var start = 0; start < revisions.Count; start += batch)
        {
            var count = Math.Min(batch, revisions.Count - start);
            if (count < keys.Count)
            {
                keys.RemoveRange(count, keys.Count - count);
            }

            for (var i = 0; i < count; i++)
            {
                WriteRevisionKey(keys[i], revisions[start + i]);
            }

            FasterBackend.ReadBatch(session, keys, ref values, found);
            for (var i = 0; i < count; i++)
            {
                yield return (revisions[start + i], found[i] is { } range ? values.AsMemory(range) : ReadOnlyMemory<byte>.Empty);
            }
        }
    }
}
