using System.Buffers.Binary;
using System.Text;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

/// <summary>
/// Whole-state snapshots for raft snapshot transfer (and later etcdctl snapshot save/restore): a logical dump of every
/// stored revision still reachable (everything the key index holds, i.e. the history after the compact revision plus
/// what compaction keeps), the meta buckets and the state (consistent index, revisions). Format in docs/storage.md.
/// </summary>
public sealed partial class MvccStore
{
    internal static ReadOnlySpan<byte> SnapshotMagic => "KVSNAP01"u8;

    internal static ReadOnlySpan<byte> SnapshotEndMagic => "KVSNAPEN"u8;

    private const uint SnapshotFormatVersion = 1;
    private const byte SnapshotRevisionTag = (byte)'R';
    private const byte SnapshotMetaTag = (byte)'M';
    private const byte SnapshotEndTag = (byte)'E';

    /// <summary>
    /// Writes a consistent snapshot of the whole store (as of a point between write txns) into a new file in
    /// <paramref name="directory"/> and returns its path (<c>kvstore-&lt;consistent index&gt;.snap</c>; written as
    /// <c>.tmp</c>, fsynced, then renamed). The writer is held off only while the revision list is taken; record reads
    /// run on the background maintenance chain, so physical compaction cannot remove a record being dumped.
    /// </summary>
    public Task<string> CreateSnapshotFileAsync(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Directory.CreateDirectory(directory);
        return RunOnMaintenanceChain(() => WriteSnapshotFile(Path.GetFullPath(directory)));
    }

    /// <summary>
    /// Replaces <paramref name="options"/>.DataDirectory with the state in a snapshot file and opens it. The new store is
    /// built and checkpointed in <c>&lt;dir&gt;.restore.tmp</c>, renamed to <c>&lt;dir&gt;.restore</c> once complete, then
    /// swapped in place of <c>&lt;dir&gt;</c>; <see cref="Open"/> finishes a swap a crash interrupted. The current store on
    /// that directory must be disposed first (a running store restores in place with <see cref="RestoreFrom"/>). A damaged
    /// file fails with an <see cref="InvalidDataException"/> naming it, and the data directory is left untouched.
    /// </summary>
    public static MvccStore RestoreFromSnapshotFile(string file, MvccStoreOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var dir = Path.GetFullPath(options.DataDirectory).TrimEnd(Path.DirectorySeparatorChar);
        PrepareRestore(file, dir, options, logger);
        FinishRestore(dir, logger);
        return Open(options, logger);
    }

    /// <summary>
    /// Replaces the state of this open store with the one in a snapshot file (raft snapshot install), keeping this
    /// instance, so everything holding it sees the new state. The restored store is built next to the data directory
    /// exactly as <see cref="RestoreFromSnapshotFile"/> does (crash-safe: <c>.restore.tmp</c>, renamed to <c>.restore</c>;
    /// <see cref="Open"/> completes an interrupted swap) while readers and the writer go on; then, between write txns
    /// and with readers held off, the FasterKV backend is closed, the directories are swapped and the key index, meta
    /// buckets and counters are rebuilt from the new backend. Readers see the old state or the new one, never a mix.
    /// Call from the writer with no txn open. A damaged file fails with an <see cref="InvalidDataException"/> naming it
    /// and leaves the store untouched; a failure after the swap started leaves the store unusable (disposed) but the
    /// directory consistent (reopening finishes the swap).
    /// </summary>
    public void RestoreFrom(string snapshotFile)
    {
        ArgumentNullException.ThrowIfNull(snapshotFile);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_openTxn is not null)
        {
            throw new InvalidOperationException("RestoreFrom must not run while a write txn is open");
        }

        // On the maintenance chain: no physical compaction, log compaction or snapshot dump runs on the old backend
        // while it is replaced, and the ones scheduled later run on the new one.
        RunOnMaintenanceChain(() => RestoreInPlace(snapshotFile)).GetAwaiter().GetResult();
    }

    private void RestoreInPlace(string snapshotFile)
    {
        var dir = _dataDirectory.TrimEnd(Path.DirectorySeparatorChar);
        PrepareRestore(snapshotFile, dir, _options, _logger);

        // Lock order as everywhere: txn gate, meta, shift lock, index lock.
        _txnGate.EnterHolder();
        try
        {
            lock (_meta)
            {
                _shiftLock.EnterWriteLock();
                try
                {
                    _lock.EnterWriteLock();
                    try
                    {
                        SwapInRestored(dir);
                    }
                    finally
                    {
                        _lock.ExitWriteLock();
                    }
                }
                finally
                {
                    _shiftLock.ExitWriteLock();
                }
            }
        }
        finally
        {
            _txnGate.Exit();
        }
    }

    /// <summary>All locks held, no reader inside: closes the old backend, swaps the directories, recovers the new state.</summary>
    private void SwapInRestored(string dir)
    {
        try
        {
            // Every rented reader session is back in the bag (readers return it before leaving the shift lock).
            _writerSession.Dispose();
            while (_readerSessions.TryTake(out var s))
            {
                s.Dispose();
            }

            _backend.Dispose();
            FinishRestore(dir, _logger);

            _index.Clear();
            _meta.Clear();
            lock (_physicalGate)
            {
                _pendingDeletes.Clear();
            }

            _consistentIndex = 0;
            _currentRevision = 0;
            _compactRevision = 0;
            _liveBytes = 0;
            _footprintRatio = 2.0;
            _recovered = new RecoveredRecords();
            _backend = new FasterBackend(_dataDirectory, _options.IndexBuckets, _options.MemorySizeBits, _options.PageSizeBits, _options.SegmentSizeBits, _logger, _recovered);
            _writerSession = _backend.NewSession();
            Recover();
        }
        catch (Exception ex)
        {
            _disposed = true;
            _logger.LogError(ex, "Restoring the store in '{Dir}' from a snapshot failed after the old state was closed; reopen the store", dir);
            throw;
        }
    }

    /// <summary>
    /// Builds the state of a snapshot file into <c>&lt;dir&gt;.restore.tmp</c>, syncs it and renames it to
    /// <c>&lt;dir&gt;.restore</c> (the point from which <see cref="FinishRestore"/> completes the swap, even after a crash).
    /// Throws before touching <paramref name="dir"/> when the file is damaged.
    /// </summary>
    private static void PrepareRestore(string file, string dir, MvccStoreOptions options, ILogger logger)
    {
        var tmp = dir + ".restore.tmp";
        var complete = dir + ".restore";
        DeleteDirectoryIfExists(tmp);
        DeleteDirectoryIfExists(complete);
        try
        {
            BuildFromSnapshot(file, tmp, options, logger);
        }
        catch
        {
            DeleteDirectoryIfExists(tmp);
            throw;
        }

        SyncTree(tmp);
        Directory.Move(tmp, complete);
        SyncParentOf(complete);
    }

    /// <summary>Completes an interrupted restore: a complete <c>&lt;dir&gt;.restore</c> replaces <c>&lt;dir&gt;</c>.</summary>
    private static void FinishRestore(string dir, ILogger logger)
    {
        var complete = dir + ".restore";
        if (!Directory.Exists(complete))
        {
            return;
        }

        var old = dir + ".old";
        DeleteDirectoryIfExists(old);
        if (Directory.Exists(dir))
        {
            Directory.Move(dir, old);
        }

        Directory.Move(complete, dir);
        SyncParentOf(dir);
        DeleteDirectoryIfExists(old);
        logger.LogInformation("Data directory '{Dir}' replaced by the restored snapshot", dir);
    }

    private string WriteSnapshotFile(string directory)
    {
        var (view, revisions) = CaptureView();
        var (index, current, compact) = (view.ConsistentIndex, view.Revision, view.CompactRevision);
        var meta = view.Meta;
        var path = Path.Combine(directory, $"kvstore-{index}.snap");
        var tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
        {
            var w = new ChecksummedWriter(fs);
            var header = new byte[8 + 4 + 8 + 8 + 8 + 8 + 8];
            SnapshotMagic.CopyTo(header);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), SnapshotFormatVersion);
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(12), index);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(20), current);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(28), compact);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(36), revisions.Count);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(44), meta.Count);
            w.Write(header);

            Span<byte> head = stackalloc byte[1 + 16 + 4];
            foreach (var record in ReadRevisionRecords(revisions))
            {
                head[0] = SnapshotRevisionTag;
                BinaryPrimitives.WriteInt64LittleEndian(head[1..], record.Revision.Main);
                BinaryPrimitives.WriteInt64LittleEndian(head[9..], record.Revision.Sub);
                BinaryPrimitives.WriteInt32LittleEndian(head[17..], record.KeyValue.Length + 1);
                w.Write(head);
                w.Write([record.Tombstone ? FlagTombstone : FlagPut]);
                w.Write(record.KeyValue.Span);
            }

            foreach (var (bucket, key, value) in meta)
            {
                w.Write([SnapshotMetaTag]);
                w.WriteBlob(Encoding.UTF8.GetBytes(bucket));
                w.WriteBlob(key);
                w.WriteBlob(value);
            }

            w.Write([SnapshotEndTag]);
            Span<byte> trailer = stackalloc byte[4 + 8];
            BinaryPrimitives.WriteUInt32LittleEndian(trailer, w.Crc);
            SnapshotEndMagic.CopyTo(trailer[4..]);
            fs.Write(trailer);
            fs.Flush(flushToDisk: true);
        }

        File.Move(tmp, path, overwrite: true);
        NativeFile.SyncDirectory(directory);
        _logger.LogInformation(
            "Snapshot file {File} written: consistent index {Index}, revision {Revision}, compact revision {Compact}, {Records} revisions, {Meta} meta entries",
            path,
            index,
            current,
            compact,
            revisions.Count,
            meta.Count);
        return path;
    }

    private static void BuildFromSnapshot(string file, string dir, MvccStoreOptions options, ILogger logger)
    {
        Exception Bad(string what, Exception? inner = null) =>
            new InvalidDataException($"snapshot file '{Path.GetFullPath(file)}' is corrupt or not a KvStore snapshot: {what}", inner);

        using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var length = fs.Length;
        if (length < 52 + 1 + 12)
        {
            throw Bad($"{length} bytes is too short");
        }

        Directory.CreateDirectory(dir);
        using var backend = new FasterBackend(dir, options.IndexBuckets, options.MemorySizeBits, options.PageSizeBits, options.SegmentSizeBits, logger);
        using (var session = backend.NewSession())
        {
            var r = new ChecksummedReader(fs, length - 12);
            try
            {
                var header = r.Read(52);
                if (!header.AsSpan(0, 8).SequenceEqual(SnapshotMagic))
                {
                    throw Bad("bad magic");
                }

                var version = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8));
                if (version != SnapshotFormatVersion)
                {
                    throw Bad($"unsupported format version {version}");
                }

                var state = new byte[28];
                header.AsSpan(12, 24).CopyTo(state);
                BinaryPrimitives.WriteUInt32LittleEndian(state.AsSpan(24), Crc32C.Compute(state.AsSpan(0, 24)));
                var revisions = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(36));
                var metas = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(44));
                Span<byte> rk = stackalloc byte[17];
                for (long i = 0; i < revisions; i++)
                {
                    var head = r.Read(21);
                    if (head[0] != SnapshotRevisionTag)
                    {
                        throw Bad($"revision record {i} has tag 0x{head[0]:X2}");
                    }

                    var rev = new Revision(BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(1)), BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(9)));
                    var record = r.Read(BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(17)));
                    WriteRevisionKey(rk, rev);
                    FasterBackend.Upsert(session, rk, record);
                }

                for (long i = 0; i < metas; i++)
                {
                    if (r.Read(1)[0] != SnapshotMetaTag)
                    {
                        throw Bad($"meta record {i} has a bad tag");
                    }

                    var bucket = Encoding.UTF8.GetString(r.ReadBlob());
                    var key = r.ReadBlob();
                    FasterBackend.Upsert(session, MetaKey(bucket, key), r.ReadBlob());
                }

                if (r.Read(1)[0] != SnapshotEndTag || r.Remaining != 0)
                {
                    throw Bad("records do not end where the header says");
                }

                var trailer = new byte[12];
                fs.ReadExactly(trailer);
                if (!trailer.AsSpan(4).SequenceEqual(SnapshotEndMagic))
                {
                    throw Bad("bad end marker (truncated file?)");
                }

                var want = BinaryPrimitives.ReadUInt32LittleEndian(trailer);
                if (want != r.Crc)
                {
                    throw Bad($"checksum mismatch (stored {want:X8}, computed {r.Crc:X8})");
                }

                FasterBackend.Upsert(session, [StatePrefix], state);
            }
            catch (Exception ex) when (ex is EndOfStreamException or ArgumentOutOfRangeException or OverflowException)
            {
                throw Bad(ex.Message, ex);
            }
        }

        backend.Checkpoint();
    }

    private static void DeleteDirectoryIfExists(string dir)
    {
        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void SyncParentOf(string path)
    {
        var parent = Path.GetDirectoryName(path);
        if (parent is not null)
        {
            NativeFile.SyncDirectory(parent);
        }
    }

    private static void SyncTree(string dir)
    {
        foreach (var d in Directory.EnumerateDirectories(dir, "*", SearchOption.AllDirectories))
        {
            NativeFile.SyncDirectory(d);
        }

        NativeFile.SyncDirectory(dir);
    }

    /// <summary>Writes through to a stream while computing CRC-32C of everything written.</summary>
    private sealed class ChecksummedWriter(Stream stream)
    {
        private Crc32C _crc = Crc32C.Create();

        public uint Crc => _crc.Current;

        public void Write(ReadOnlySpan<byte> data)
        {
            _crc.Append(data);
            stream.Write(data);
        }

        public void WriteBlob(ReadOnlySpan<byte> data)
        {
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(len, data.Length);
            Write(len);
            Write(data);
        }
    }

    /// <summary>Reads at most <c>limit</c> bytes from a stream, computing their CRC-32C; lengths are bounds-checked.</summary>
    private sealed class ChecksummedReader(Stream stream, long limit)
    {
        private Crc32C _crc = Crc32C.Create();
        private long _read;

        public uint Crc => _crc.Current;

        public long Remaining => limit - _read;

        public byte[] Read(int count)
        {
            if (count < 0 || count > Remaining)
            {
                throw new EndOfStreamException($"a length of {count} at offset {_read} runs past the end of the records");
            }

            var buffer = new byte[count];
            stream.ReadExactly(buffer);
            _read += count;
            _crc.Append(buffer);
            return buffer;
        }

        public byte[] ReadBlob() => Read(BinaryPrimitives.ReadInt32LittleEndian(Read(4)));
    }
}
