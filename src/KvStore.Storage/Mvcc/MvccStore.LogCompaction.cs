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
    private const long FlushEveryBytes = 16L << 20;

    private readonly long _logCompactionMinBytes;

    // Log bytes per live byte measured right after the last log compaction (record headers, alignment, page slack).
    private double _footprintRatio = 2.0;
    private int _logCompactions;
    private int _logCompactionsRunning;

    /// <summary>
    /// True while a log compaction (defrag or background) runs: it ends with its own checkpoint, so the raft host defers
    /// its periodic checkpoint instead of stalling apply to flush copies the compaction is still making.
    /// </summary>
    public bool IsCompactingLog => Volatile.Read(ref _logCompactionsRunning) > 0;

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
        CheckpointAfterCompaction();
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
        lock (_physicalGate)
        {
            var done = _physical.ContinueWith(
                _ =>
                {
                    var before = DbSizeBytes;
                    var took = System.Diagnostics.Stopwatch.StartNew();
                    TimeSpan compacted, blocked;
                    Interlocked.Increment(ref _logCompactionsRunning);
                    try
                    {
                        CompactLog();
                        compacted = took.Elapsed;
                        blocked = CheckpointAfterCompaction();
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _logCompactionsRunning);
                    }

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
                },
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default);
            _physical = done.ContinueWith(_ => { }, TaskScheduler.Default);
            return done;
        }
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

        Interlocked.Increment(ref _logCompactionsRunning);
        try
        {
            CompactLog();
            CheckpointAfterCompaction();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Nothing is lost: until a checkpoint records the new begin address no file is deleted. Retried next time.
            _logger.LogWarning(ex, "background FasterKV log compaction failed");
            return;
        }
        finally
        {
            Interlocked.Decrement(ref _logCompactionsRunning);
        }

        _backend.WaitForSegmentsBelowBeginDeleted(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// The checkpoint that makes a log compaction durable, with writes held off as briefly as possible: the records
    /// compacted forward (possibly hundreds of MB) are flushed and the hash index (which the copies rewrote) is
    /// checkpointed while writes go on. The log checkpoint must begin between write txns, so that its version holds
    /// whole txns only; writes are held off until its version switch (a txn after it lies wholly in the next version,
    /// past the checkpoint's final address), not while its last flush and metadata reach the disk. Nothing depends on
    /// the checkpoint before it is durable: the raft log is truncated only after a checkpoint the applier takes, and a
    /// crash before the commit recovers the previous checkpoint with every file still there. Returns how long write
    /// txns were held off.
    /// </summary>
    private TimeSpan CheckpointAfterCompaction()
    {
        var step = System.Diagnostics.Stopwatch.StartNew();
        _backend.FlushInSteps(_backend.LogTailAddress, FlushEveryBytes);
        var flushed = step.Elapsed;
        _backend.CheckpointIndex();
        var indexed = step.Elapsed;
        // The index checkpoint can take seconds while writes go on: flush what they appended meanwhile before the gate.
        _backend.ShiftReadOnlyAddress(_backend.LogTailAddress);
        var flushedAgain = step.Elapsed;
        Task durable;
        ulong index;
        long revision;
        _txnGate.Wait();
        var held = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            durable = _backend.BeginLogCheckpoint();
            (index, revision) = (ConsistentIndex, CurrentRevision);
            held.Stop();
        }
        finally
        {
            _txnGate.Release();
        }

        durable.GetAwaiter().GetResult();
        _logger.LogInformation(
            "Checkpoint taken at consistent index {Index}, revision {Revision} (log flushed {Flush:F3}s, index checkpoint {IndexCheckpoint:F3}s, second flush {Flush2:F3}s, log checkpoint durable {Durable:F3}s later, writes held off {Held:F3}s of it: {Phases})",
            index,
            revision,
            flushed.TotalSeconds,
            (indexed - flushed).TotalSeconds,
            (flushedAgain - indexed).TotalSeconds,
            (step.Elapsed - flushedAgain).TotalSeconds,
            held.Elapsed.TotalSeconds,
            _backend.LastVersionSwitchPhases);
        return held.Elapsed;
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
        List<Revision> live = [];
        var held = new System.Diagnostics.Stopwatch();
        var heldCollecting = TimeSpan.Zero;
        _txnGate.Wait();
        held.Start();
        try
        {
            // No txn is open: every revision record below the tail is in the key index (or is garbage).
            cut = _backend.LogTailAddress;
            _lock.EnterReadLock();
            try
            {
                foreach (var ki in _index)
                {
                    live.AddRange(ki.AllRevisions());
                }
            }
            finally
            {
                _lock.ExitReadLock();
            }

            live.AddRange(PendingDeletes());
        }
        finally
        {
            held.Stop();
            heldCollecting = held.Elapsed;
            _txnGate.Release();
        }

        // Checkpoints and the begin-address shift both run with the txn gate held, so a checkpoint sees either the old
        // begin address (and files that are still all there) or the new one together with every copy made before it.
        var begin = _backend.LogBeginAddress;
        // Everything below the cut becomes read-only, so an upsert of one of those keys appends a new record.
        _backend.FlushInSteps(cut, FlushEveryBytes);
        long copied = 0;
        long flushed = 0;
        using var session = _backend.NewSession();
        Span<byte> rk = stackalloc byte[17];
        foreach (var rev in live)
        {
            WriteRevisionKey(rk, rev);
            if (FasterBackend.TryRead(session, rk, out var record))
            {
                FasterBackend.Upsert(session, rk, record);
                copied += record.Length + 17;
                if (copied - flushed >= FlushEveryBytes)
                {
                    // Flushed as they go: a checkpoint the applier takes meanwhile (every --snapshot-count entries)
                    // must not find hundreds of MB of copies to flush while it holds up apply.
                    _backend.ShiftReadOnlyAddress(_backend.LogTailAddress);
                    flushed = copied;
                }
            }
        }

        // Evicting the pages below the cut waits for every thread to leave its epoch: done here, writes go on meanwhile,
        // and moving the begin address below finds nothing left to evict.
        _backend.EvictBelow(cut);
        _txnGate.Wait();
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
            _txnGate.Release();
        }

        var live2 = Math.Max(1, DbSizeInUseBytes);
        _footprintRatio = Math.Max(1.0, (double)(_backend.LogTailAddress - _backend.LogBeginAddress) / live2);
        Interlocked.Increment(ref _logCompactions);
        _logger.LogInformation(
            "FasterKV log compacted: begin address {Old} -> {New}, {Records} live revisions ({Bytes} bytes) copied forward; writes held off {Held:F3}s ({Collecting:F3}s listing live revisions)",
            begin,
            _backend.LogBeginAddress,
            live.Count,
            copied,
            held.Elapsed.TotalSeconds,
            heldCollecting.TotalSeconds);
    }
}
