using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

/// <summary>
/// Checkpoints. FasterKV runs one checkpoint at a time, so every checkpoint of the store runs on the maintenance chain
/// (after the physical compactions, log compactions, snapshot dumps and restores queued before it).
/// </summary>
public sealed partial class MvccStore
{
    /// <summary>
    /// Durable FasterKV checkpoint (fold-over: the log is flushed and its metadata saved) holding data, meta
    /// buckets and the state record (consistent index, revisions), with write txns held off for all of it. Call between
    /// txns (another thread's call waits for the open txn to close); shutdown and tests use it. The server's periodic
    /// checkpoint is <see cref="CheckpointWhileWritingAsync"/>, which does not hold writes off.
    /// </summary>
    public void Checkpoint()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_openTxn is not null)
        {
            throw new InvalidOperationException("Checkpoint must not run while a write txn is open");
        }

        RunOnMaintenanceChain(() =>
        {
            _txnGate.EnterHolder();
            try
            {
                _backend.Checkpoint();
                _lastCheckpoint = CheckpointFingerprint();
                _logger.LogInformation("Checkpoint taken at consistent index {Index}, revision {Revision}", ConsistentIndex, CurrentRevision);
            }
            finally
            {
                _txnGate.Exit();
            }
        }).GetAwaiter().GetResult();
    }

    /// <summary>
    /// A durable checkpoint taken while the writer goes on (the raft host's every --snapshot-count entries): write txns
    /// are held off only for its version switch, not while hundreds of MB are flushed and the hash index is written.
    /// <paramref name="atSwitch"/> runs at the switch with no write txn open, so it sees exactly the state the checkpoint
    /// holds (the raft host reads the member table there). Completes with the consistent index the checkpoint holds,
    /// once it is durable: only then may anything that depends on it (truncating the raft log) go ahead.
    /// </summary>
    public Task<ulong> CheckpointWhileWritingAsync(Action atSwitch)
    {
        ArgumentNullException.ThrowIfNull(atSwitch);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return RunOnMaintenanceChain(() =>
        {
            CheckpointWhileWriting(atSwitch, out var index);
            return index;
        });
    }

    private Task<bool> RunOnMaintenanceChain(Action work) => RunOnMaintenanceChain(() =>
    {
        work();
        return true;
    });

    private Task<T> RunOnMaintenanceChain<T>(Func<T> work)
    {
        lock (_physicalGate)
        {
            var done = _physical.ContinueWith(_ => work(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
            _physical = done.ContinueWith(_ => { }, TaskScheduler.Default);
            return done;
        }
    }

    /// <summary>
    /// A checkpoint with writes held off as briefly as possible (on the maintenance chain). Everything up to the tail
    /// (possibly hundreds of MB, e.g. the records a log compaction copied forward) is flushed and the hash index is
    /// checkpointed while writes go on. The log checkpoint must begin between write txns, so that its version holds
    /// whole txns only; writes are held off until its version switch (a txn after it lies wholly in the next version,
    /// past the checkpoint's final address), not while its last flush and metadata reach the disk. Nothing depends on
    /// the checkpoint before it is durable: a crash before the commit recovers the previous checkpoint with every file
    /// still there. Returns how long write txns were held off; <paramref name="index"/> is the consistent index it holds.
    /// </summary>
    private TimeSpan CheckpointWhileWriting(Action? atSwitch, out ulong index)
    {
        var step = System.Diagnostics.Stopwatch.StartNew();
        _backend.FlushInSteps(_backend.LogTailAddress, FlushEveryBytes);
        var flushed = step.Elapsed;
        _backend.CheckpointIndex();
        var indexed = step.Elapsed;
        // The index checkpoint can take seconds while writes go on: flush what they appended meanwhile before the gate.
        _backend.ShiftReadOnlyAddress(_backend.LogTailAddress);
        var flushedAgain = step.Elapsed;
        BeforeCheckpointGateForTest?.Invoke();
        Task durable;
        long revision;
        (long StateSaves, long Begin, long Tail) fingerprint;
        _txnGate.EnterHolder();
        var held = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            durable = _backend.BeginLogCheckpoint();
            (index, revision, fingerprint) = (ConsistentIndex, CurrentRevision, CheckpointFingerprint());
            atSwitch?.Invoke();
            held.Stop();
        }
        finally
        {
            _txnGate.Exit();
        }

        durable.GetAwaiter().GetResult();
        _lastCheckpoint = fingerprint;
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

    /// <summary>Tests: runs on the checkpoint's thread after its last flush, before it waits for the txn gate.</summary>
    internal Action? BeforeCheckpointGateForTest { get; set; }

    /// <summary>What a checkpoint captured: every committed write saves the state record; other writes move the log's ends.</summary>
    private (long StateSaves, long Begin, long Tail) CheckpointFingerprint() =>
        (Interlocked.Read(ref _stateSaves), _backend.LogBeginAddress, _backend.LogTailAddress);
}
