using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

/// <summary>
/// Space reclamation: FasterKV's log is append-only, so deleted and superseded records stay in its segment files until
/// the begin address moves past them. Log compaction copies every live record below a cut address to the tail, moves
/// the begin address to the cut (in memory only), and takes a checkpoint; FASTER deletes the segment files below the
/// begin address only after the checkpoint that records it is committed. A crash before that commit recovers the
/// previous checkpoint, whose files were never touched; a crash after it recovers the new one, which holds the copies.
/// </summary>
public sealed partial class MvccStore
{
    // One page: a WAL fsync never queues behind more than one step of a background flush.
    private const long FlushEveryBytes = 4L << 20;

    private readonly long _logCompactionMinBytes;

    // Log bytes per live byte measured right after the last log compaction (record headers, alignment, page slack).
    private double _footprintRatio = 2.0;
    private int _logCompactions;

    /// <summary>How many log compactions ran (tests).</summary>
    internal int LogCompactions => Volatile.Read(ref _logCompactions);

    /// <summary>Tests: the two halves of a defragmentation, to take crash images in between.</summary>
    internal void CompactLogForTest() => CompactLog();

    /// <summary>Tests: called inside FasterKV's state transition before it enters each checkpoint phase.</summary>
    internal Action<FASTER.core.Phase>? OnCheckpointPhaseForTest
    {
        set => _backend.OnCheckpointPhaseForTest = value;
    }

    internal void CheckpointAfterCompactionForTest()
    {
        CheckpointWhileWriting(atSwitch: null, out _);
        _backend.WaitForSegmentsBelowBeginDeleted(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// Maintenance.Defragment: waits for pending physical compaction, compacts the FasterKV log up to its tail, takes a
    /// checkpoint between write txns and deletes the segment files it made obsolete, so <see cref="DbSizeBytes"/> drops.
    /// Safe to call from any thread while the applier runs (it waits for the open txn, then briefly blocks the next one).
    /// </summary>
    public Task DefragmentAsync()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return RunOnMaintenanceChain(() =>
        {
            var before = DbSizeBytes;
            var took = System.Diagnostics.Stopwatch.StartNew();
            CompactLog();
            var compacted = took.Elapsed;
            var blocked = CheckpointWhileWriting(atSwitch: null, out _);

            var checkpointed = took.Elapsed;
            if (!_backend.WaitForSegmentsBelowBeginDeleted(TimeSpan.FromSeconds(10)))
            {
                _logger.LogWarning("Defragment: segment files below the begin address are not deleted yet");
            }

            _logger.LogInformation(
                "Defragmented: {Before} -> {After} bytes on disk in {Seconds:F2}s (log compaction {Compaction:F2}s, checkpoint {Checkpoint:F2}s with writes held off {Blocked:F3}s, old segment files deleted {Deleted:F2}s after it)",
                before,
                DbSizeBytes,
                took.Elapsed.TotalSeconds,
                compacted.TotalSeconds,
                (checkpointed - compacted).TotalSeconds,
                blocked.TotalSeconds,
                (took.Elapsed - checkpointed).TotalSeconds);
        });
    }

    /// <summary>After physical deletes: compacts the log when its estimated garbage is large enough.</summary>
    private void MaybeCompactLog()
    {
        if (_disposed)
        {
            return;
        }

        var logBytes = _backend.LogTailAddress - _backend.LogBeginAddress;
        var footprint = (long)(DbSizeInUseBytes * _footprintRatio);
        var garbage = logBytes - footprint;
        if (garbage < Math.Max(_logCompactionMinBytes, footprint))
        {
            return;
        }

        try
        {
            CompactLog();
            CheckpointWhileWriting(atSwitch: null, out _);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Nothing is lost: until a checkpoint records the new begin address no file is deleted. Retried next time.
            _logger.LogWarning(ex, "background FasterKV log compaction failed");
            return;
        }

        _backend.WaitForSegmentsBelowBeginDeleted(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// Copies every live record below the current tail (the cut) to the tail and moves the begin address to the cut.
    /// Revision records are immutable and only deleted by physical compaction (which runs on the same background chain),
    /// so they are copied while the writer runs; meta and state records are copied with the writer held off, and the
    /// begin address moves with readers held off.
    /// </summary>
    private void CompactLog()
    {
        long cut;
        long cutRevision;
        var held = new System.Diagnostics.Stopwatch();
        _txnGate.EnterHolder();
        held.Start();
        try
        {
            // No txn is open: every revision record at or below cutRevision lies below the tail, every later one above it.
            cut = _backend.LogTailAddress;
            cutRevision = CurrentRevision;
        }
        finally
        {
            held.Stop();
            _txnGate.Exit();
        }

        var listing = System.Diagnostics.Stopwatch.StartNew();
        var live = LiveRevisionsUpTo(cutRevision);
        listing.Stop();

        // Checkpoints and the begin-address shift both run with the txn gate held, so a checkpoint sees either the old
        // begin address (and files that are still all there) or the new one together with every copy made before it.
        var begin = _backend.LogBeginAddress;
        // Everything below the cut becomes read-only, so an upsert of one of those keys appends a new record.
        _backend.FlushInSteps(cut, FlushEveryBytes);
        long copied = 0;
        long flushed = 0;
        using var session = _backend.NewSession();
        Span<byte> rk = stackalloc byte[17];
        var pacer = new BackgroundPacer();

        // In revision order, which is the order they were appended in: the reads of the records already evicted to
        // disk go through the files front to back.
        live.Sort();
        foreach (var (rev, stored) in ReadStoredValues(live))
        {
            pacer.Step();
            if (stored.IsEmpty)
            {
                continue;
            }

            WriteRevisionKey(rk, rev);
            FasterBackend.Upsert(session, rk, stored.Span);
            copied += stored.Length + 17;
            if (copied - flushed >= FlushEveryBytes)
            {
                // Flushed as they go, paced: the copy can outrun the disk many times over, and the WAL's fsyncs
                // would queue behind everything it handed over at once.
                _backend.FlushPaced(_backend.LogTailAddress);
                flushed = copied;
                pacer.Restart();
            }
        }

        // Evicting the pages below the cut waits for every thread to leave its epoch: done here, writes go on meanwhile,
        // and moving the begin address below finds nothing left to evict.
        var evicting = System.Diagnostics.Stopwatch.StartNew();
        _backend.EvictBelow(cut);
        evicting.Stop();
        _txnGate.EnterHolder();
        held.Start();
        try
        {
            if (FasterBackend.TryRead(session, [StatePrefix], out var state))
            {
                FasterBackend.Upsert(session, [StatePrefix], state);
            }

            lock (_meta)
            {
                foreach (var (bucket, items) in _meta)
                {
                    foreach (var (key, value) in items)
                    {
                        FasterBackend.Upsert(session, MetaKey(bucket, key), value);
                    }
                }
            }

            _shiftLock.EnterWriteLock();
            try
            {
                _backend.ShiftBeginAddress(cut);
            }
            finally
            {
                _shiftLock.ExitWriteLock();
            }
        }
        finally
        {
            held.Stop();
            _txnGate.Exit();
        }

        var live2 = Math.Max(1, DbSizeInUseBytes);
        _footprintRatio = Math.Max(1.0, (double)(_backend.LogTailAddress - _backend.LogBeginAddress) / live2);
        Interlocked.Increment(ref _logCompactions);
        _logger.LogInformation(
            "FasterKV log compacted: begin address {Old} -> {New}, {Records} live revisions ({Bytes} bytes) copied forward; writes held off {Held:F3}s (live revisions listed in {Listing:F3}s and pages below the cut evicted in {Evicting:F3}s while writes went on)",
            begin,
            _backend.LogBeginAddress,
            live.Count,
            copied,
            held.Elapsed.TotalSeconds,
            listing.Elapsed.TotalSeconds,
            evicting.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// Every revision at or below <paramref name="revision"/> that the key index holds or a scheduled physical delete
    /// still needs (its delete must find the record, and <see cref="DbSizeInUseBytes"/> stays exact). Compaction may
    /// drop revisions from the key index while <see cref="IndexedRevisionsUpTo"/> lists: those are scheduled for
    /// physical deletion and taken from the schedule after the index (physical deletes run on the maintenance chain,
    /// after this).
    /// </summary>
    private List<Revision> LiveRevisionsUpTo(long revision)
    {
        var live = IndexedRevisionsUpTo(revision, paced: true);
        live.AddRange(PendingDeletes().Where(r => r.Main <= revision));
        return live;
    }

    /// <summary>
    /// The revisions at or below <paramref name="revision"/> that the key index holds, unsorted, while writes go on.
    /// The key index references are copied under one read lock (~1 ms per 100,000 keys), then their revisions are
    /// read a thousand keys per read-lock hold, so the writer's index updates wait for one small chunk at most (listing
    /// 350,000 revisions at once held every put for ~0.2 s); <paramref name="paced"/>: in paced bursts (see
    /// <see cref="BackgroundPacer"/>), never while the caller holds writes off, which would only lengthen the hold.
    /// Between chunks the writer only adds revisions above <paramref name="revision"/> (filtered out here); only
    /// compaction removes any (a dropped key's index is left empty), and it moves <see cref="CompactRevision"/> first,
    /// so a caller that needs the exact set checks that.
    /// </summary>
    private List<Revision> IndexedRevisionsUpTo(long revision, bool paced)
    {
        const int KeysPerChunk = 1024;
        KeyIndex[] keys;
        _lock.EnterReadLock();
        try
        {
            keys = new KeyIndex[_index.Count];
            _index.CopyTo(keys);
        }
        finally
        {
            _lock.ExitReadLock();
        }

        List<Revision> revisions = new(keys.Length);
        var pacer = paced ? new BackgroundPacer() : null;
        for (var start = 0; start < keys.Length; start += KeysPerChunk)
        {
            pacer?.Step();
            var end = Math.Min(keys.Length, start + KeysPerChunk);
            _lock.EnterReadLock();
            try
            {
                for (var i = start; i < end; i++)
                {
                    foreach (var generation in keys[i].Generations)
                    {
                        foreach (var rev in generation.Revisions)
                        {
                            if (rev.Main <= revision)
                            {
                                revisions.Add(rev);
                            }
                        }
                    }
                }
            }
            finally
            {
                _lock.ExitReadLock();
            }
        }

        return revisions;
    }
}
