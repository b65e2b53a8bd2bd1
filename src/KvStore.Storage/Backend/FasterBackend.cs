using System.Buffers;
using System.Diagnostics;
using FASTER.core;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Backend;

using Session = ClientSession<SpanByte, SpanByte, SpanByte, SpanByteAndMemory, Empty, SpanByteFunctions<Empty>>;

/// <summary>
/// FasterKV&lt;SpanByte, SpanByte&gt; behind a narrow byte-oriented surface. Sessions are not thread-safe:
/// each caller owns one (the writer one, readers rent from a pool). Status is a value: NotFound is not an error.
/// <para>
/// Every stored value ends with a CRC-32C of its key and value (FasterKV's records carry no checksum, so a flipped
/// byte on disk would otherwise be served as data). Reads verify and strip it; opening a store checks every record of
/// the log files first (<see cref="DataLogCheck"/>), and the index checkpoint's files against the checksums recorded
/// when it was taken (<see cref="IndexChecksums"/>). The <see cref="FormatFileName"/> file marks a store written this way.
/// </para>
/// </summary>
internal sealed unsafe class FasterBackend : IDisposable
{
    /// <summary>The file in the store's directory naming its record format.</summary>
    public const string FormatFileName = "FORMAT";

    private const string Format = "kvstore-store 2 (crc32c per record)";
    /// <summary>Bytes a stored value carries after it: callers of the no-copy upsert leave this much room.</summary>
    public const int ChecksumLength = sizeof(uint);
    private const int StackCopyLimit = 1024;

    // FasterKV's directory of log checkpoints (one per token) under the checkpoint directory.
    private const string LogCheckpointsDirectory = "cpr-checkpoints";

    private readonly FasterKV<SpanByte, SpanByte> _kv;
    private readonly IDevice _device;
    private readonly string _checkpointDir;
    private readonly DeviceLogCommitCheckpointManager _checkpoints; // FasterKV does not dispose a manager it is given
    private readonly CheckpointFiles.Writes _checkpointWrites = new();
    private readonly SpanByteFunctions<Empty> _functions = new AppendOnlyFunctions();
    private readonly int _segmentBits;
    private readonly int _pageBits;
    private readonly CheckpointPhases _phases = new();
    private Task _checkpointInFlight = Task.CompletedTask;
    private Dictionary<byte[], LatestRecord>? _recoveredRecords; // every key's latest record, when the index must be checked key by key

    /// <param name="recoverySink">Receives every record of the recovered checkpoint's log, in log order, as it is checked (the open's one read of the log); null when nothing needs them.</param>
    /// <param name="wrapLogDevice">Tests only: wraps the log device (power-cut simulation); null in the server.</param>
    /// <param name="wrapCheckpointDevice">Tests only: wraps each checkpoint file's device (power-cut simulation); null in the server.</param>
    /// <param name="logHoldsEveryWrite">The caller's log can replay every write since the store was created (<see cref="Mvcc.MvccStoreOptions.LogHoldsEveryWrite"/>).</param>
    public FasterBackend(string dataDirectory, long indexBuckets, int memoryBits, int pageBits, int segmentBits, ILogger logger,
        ILogRecordSink? recoverySink = null, Func<IDevice, IDevice>? wrapLogDevice = null, Func<IDevice, IDevice>? wrapCheckpointDevice = null,
        bool logHoldsEveryWrite = false)
    {
        _checkpointDir = Path.Combine(dataDirectory, "checkpoints");
        _segmentBits = segmentBits;
        _pageBits = pageBits;
        CheckOrWriteFormat(dataDirectory);
        DurableDirectory.Create(_checkpointDir);
        if (logHoldsEveryWrite)
        {
            DropUnfinishedFirstCheckpoint(logger);
        }

        _device = new InlineReadDevice(new PacedRemovalDevice(Devices.CreateLogDevice(Path.Combine(dataDirectory, "kv.log"), preallocateFile: false, deleteOnClose: false)));
        if (wrapLogDevice is not null)
        {
            _device = wrapLogDevice(_device);
        }

        _checkpoints = CheckpointFiles.OpenManager(_checkpointDir, _checkpointWrites, wrapCheckpointDevice);
        var settings = new FasterKVSettings<SpanByte, SpanByte>
        {
            IndexSize = indexBuckets * 64,
            LogDevice = _device,
            MemorySize = 1L << memoryBits,
            PageSize = 1L << pageBits,
            SegmentSize = 1L << segmentBits,
            CheckpointManager = _checkpoints,
            TryRecoverLatest = false,
        };
        _kv = new FasterKV<SpanByte, SpanByte>(settings);
        _kv.UnsafeRegisterCallback(_phases);
        RecoveredFromCheckpoint = TryRecover(logger, recoverySink);
    }

    public bool RecoveredFromCheckpoint { get; }

    public string DataFilePrefix => Path.Combine(Path.GetDirectoryName(_checkpointDir)!, "kv.log");

    public long LogBeginAddress => _kv.Log.BeginAddress;

    public long LogTailAddress => _kv.Log.TailAddress;

    public Session NewSession() => _kv.For(_functions).NewSession<SpanByteFunctions<Empty>>();

    /// <summary>Makes every record below address read-only (flushed), so an upsert of such a key appends a new copy at the tail.</summary>
    public void ShiftReadOnlyAddress(long address) => _kv.Log.ShiftReadOnlyAddress(address, wait: true);

    /// <summary>
    /// <see cref="FlushPaced"/> in steps of at most stepBytes: the mutable region can hold hundreds of MB, and handing
    /// it to the disk at once queues the WAL's fsyncs behind all of it.
    /// </summary>
    public void FlushInSteps(long address, long stepBytes)
    {
        for (var next = _kv.Log.ReadOnlyAddress + stepBytes; next < address; next += stepBytes)
        {
            FlushPaced(next);
        }

        FlushPaced(address);
    }

    /// <summary>
    /// Background flushes (a checkpoint's, a log compaction's copies) leave the disk to the WAL at least half the time:
    /// flushes up to address (<see cref="ShiftReadOnlyAddress"/>), then waits as long as that took. A WAL fsync that
    /// arrives meanwhile queues behind one step at most, however much there is to flush.
    /// </summary>
    public void FlushPaced(long address)
    {
        var started = Stopwatch.GetTimestamp();
        _kv.Log.ShiftReadOnlyAddress(address, wait: true);
        Thread.Sleep(Stopwatch.GetElapsedTime(started));
    }

    /// <summary>Drops the in-memory pages below address (flushed already, see <see cref="ShiftReadOnlyAddress"/>); reads of them go to disk.</summary>
    public void EvictBelow(long address) => _kv.Log.ShiftHeadAddress(address, wait: true);

    /// <summary>
    /// Moves the begin address (snapped down to a page start) in memory only: files stay until the next checkpoint,
    /// which records the new begin address and only then lets FASTER delete the segments below it.
    /// </summary>
    public void ShiftBeginAddress(long address) => _kv.Log.ShiftBeginAddress(address, snapToPageStart: true, truncateLog: false);

    /// <summary>
    /// After a checkpoint FASTER deletes the segment files wholly below the begin address it recorded, in the background
    /// (once the epoch allows). Waits until they are gone, or until the timeout; returns whether they are.
    /// </summary>
    public bool WaitForSegmentsBelowBeginDeleted(TimeSpan timeout)
    {
        var firstKept = _kv.Log.BeginAddress >> _segmentBits;
        var deadline = DateTime.UtcNow + timeout;
        using var session = NewSession();
        while (true)
        {
            var remaining = Directory.EnumerateFiles(Path.GetDirectoryName(_checkpointDir)!, "kv.log.*")
                .Any(f => long.TryParse(Path.GetExtension(f).AsSpan(1), out var n) && n < firstKept);
            if (!remaining)
            {
                return true;
            }

            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            // Deferred epoch actions (the segment deletes) run when a thread refreshes its epoch.
            session.Refresh();
            Thread.Sleep(2);
        }
    }

    /// <summary>
    /// A new store gets the format file (durably, before any record is written); an existing one must have the same:
    /// a store without it was written by an earlier version whose records carry no checksum.
    /// </summary>
    private static void CheckOrWriteFormat(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, FormatFileName);
        if (File.Exists(path))
        {
            var found = File.ReadAllText(path).TrimEnd('\n');
            if (found != Format)
            {
                throw new InvalidDataException($"store format file '{path}' says '{Truncated(found)}', expected '{Format}': the file is damaged or the store was written by another version");
            }

            return;
        }

        var hasData = Directory.Exists(Path.Combine(dataDirectory, "checkpoints")) || Directory.EnumerateFiles(dataDirectory, "kv.log.*").Any();
        if (hasData)
        {
            throw new InvalidDataException(
                $"store in '{dataDirectory}' has no '{FormatFileName}' file: it was written by an earlier KvStore version whose records carry no checksum (or the file was lost); take a snapshot with that version and restore it with this one");
        }

        Directory.CreateDirectory(dataDirectory);
        using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            file.Write(System.Text.Encoding.ASCII.GetBytes(Format + "\n"));
            file.Flush(flushToDisk: true);
        }

        DurableDirectory.Sync(dataDirectory);
    }

    private static string Truncated(string s) => s.Length <= 64 ? s : s[..64] + "...";

    private static uint Checksum(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        var crc = Crc32C.Create();
        crc.Append(key);
        crc.Append(value);
        return crc.Current;
    }

    /// <summary>The value of a stored record (value + checksum), when the checksum matches the key and value.</summary>
    public static bool TryStripChecksum(ReadOnlySpan<byte> key, ReadOnlySpan<byte> stored, out ReadOnlySpan<byte> value)
    {
        value = stored.Length >= ChecksumLength ? stored[..^ChecksumLength] : default;
        return stored.Length >= ChecksumLength
            && Checksum(key, value) == System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(stored[^ChecksumLength..]);
    }

    private static ReadOnlySpan<byte> Verified(ReadOnlySpan<byte> key, ReadOnlySpan<byte> stored)
    {
        if (!TryStripChecksum(key, stored, out var value))
        {
            throw new InvalidDataException(
                $"FasterKV record of key {Convert.ToHexString(key[..Math.Min(key.Length, 32)])} fails its checksum on a read: the store's data log (kv.log.*) is damaged");
        }

        return value;
    }

    /// <summary>
    /// A crash during the store's first checkpoint leaves checkpoint directories none of whose log metadata reads.
    /// Nothing durable depends on them (the caller's log still holds every write), so they go, and the store opens
    /// empty as if that checkpoint had never started; FasterKV then writes its log from the start again.
    /// </summary>
    private void DropUnfinishedFirstCheckpoint(ILogger logger)
    {
        var logCheckpoints = Path.Combine(_checkpointDir, LogCheckpointsDirectory);
        if (!Directory.Exists(logCheckpoints) || !Directory.EnumerateFileSystemEntries(logCheckpoints).Any()
            || DataLogCheck.HasReadableCheckpoint(_checkpointDir))
        {
            return;
        }

        logger.LogWarning(
            "FasterKV checkpoint in {Dir} never finished (a crash during the store's first checkpoint): dropping it; the store opens empty and the write-ahead log replays every write",
            _checkpointDir);
        foreach (var directory in Directory.EnumerateDirectories(_checkpointDir))
        {
            Directory.Delete(directory, recursive: true);
        }

        DurableDirectory.Sync(_checkpointDir);
    }

    private bool TryRecover(ILogger logger, ILogRecordSink? sink)
    {
        var hasCheckpoint = Directory.Exists(Path.Combine(_checkpointDir, LogCheckpointsDirectory))
            && Directory.EnumerateFileSystemEntries(Path.Combine(_checkpointDir, LogCheckpointsDirectory)).Any();
        if (!hasCheckpoint)
        {
            return false;
        }

        // Before FasterKV reads the log: it trusts every length field it meets.
        var started = Stopwatch.GetTimestamp();
        var checkedLog = DataLogCheck.Read(_checkpointDir, DataFilePrefix, _pageBits, _segmentBits, sink);
        _recoveredRecords = checkedLog.Latest;
        var checkedAt = Stopwatch.GetTimestamp();
        try
        {
            // Exactly the checkpoint whose log was checked (an empty index token: no index, replay the whole log).
            _kv.Recover(checkedLog.IndexToken, checkedLog.LogToken);
            logger.LogInformation(
                "FasterKV recovered from checkpoint in {Dir}: data log read and checked in {CheckSeconds:F3}s ({LogMiB:F0} MiB), index {IndexCheck}, FasterKV recovery {RecoverSeconds:F3}s",
                _checkpointDir,
                Stopwatch.GetElapsedTime(started, checkedAt).TotalSeconds,
                (_kv.Log.TailAddress - _kv.Log.BeginAddress) / 1048576.0,
                checkedLog.Latest is null ? "checked by its recorded checksums" : "without recorded checksums (checked key by key next)",
                Stopwatch.GetElapsedTime(checkedAt).TotalSeconds);
            return true;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            var files = string.Join(", ", Directory.EnumerateFiles(_checkpointDir, "*", SearchOption.AllDirectories));
            throw new InvalidDataException(
                $"FasterKV checkpoint in '{_checkpointDir}' is corrupt or unreadable ({ex.Message}); checkpoint files: {files}", ex);
        }
    }

    /// <summary>
    /// Waits for the session's disk reads. Most are complete already (<see cref="InlineReadDevice"/> reads a record on
    /// the caller's thread); the rest go to FASTER's file device, which completes them on the thread pool. FasterKV's
    /// own wait (<c>CompletePending(wait: true)</c>) blocks on a semaphore the pool cannot see: with every worker
    /// blocked in such a wait (64 clients reading records older than the in-memory window, before reads were inline)
    /// the completions waited for the pool's slow thread injection, and reads took seconds. Blocking on a task instead
    /// tells the pool that its thread is blocked, and it adds a worker at once.
    /// </summary>
    private static CompletedOutputIterator<SpanByte, SpanByte, SpanByte, SpanByteAndMemory, Empty> WaitForPendingReads(Session session) =>
        session.CompletePendingWithOutputsAsync().AsTask().GetAwaiter().GetResult();

    public static bool TryRead(Session session, ReadOnlySpan<byte> key, out byte[] value)
    {
        fixed (byte* k = key)
        {
            var keySb = SpanByte.FromPointer(k, key.Length);
            SpanByteAndMemory output = default;
            var status = session.Read(ref keySb, ref output);
            if (status.IsPending)
            {
                using (var outputs = WaitForPendingReads(session))
                {
                    while (outputs.Next())
                    {
                        status = outputs.Current.Status;
                        output = outputs.Current.Output;
                    }
                }
            }

            if (!status.Found)
            {
                output.Memory?.Dispose();
                value = [];
                return false;
            }

            value = ToArray(key, ref output);
            return true;
        }
    }

    /// <summary>
    /// Reads many keys with their disk reads in flight together (one completion wait per batch rather than one per key,
    /// which bounds a cold read of a large store by disk throughput instead of latency). The values are copied one after
    /// another into <paramref name="values"/> (grown when too small, so a caller reusing it allocates nothing per key):
    /// <paramref name="found"/>[i] is where the value of <paramref name="keys"/>[i] lies in it, or null when absent.
    /// </summary>
    public static void ReadBatch(Session session, IReadOnlyList<byte[]> keys, ref byte[] values, Range?[] found)
    {
        var used = 0;
        var pending = new Dictionary<byte[], int>(ByteKeyComparer.Instance);
        for (var i = 0; i < keys.Count; i++)
        {
            found[i] = null;
            fixed (byte* k = keys[i])
            {
                var keySb = SpanByte.FromPointer(k, keys[i].Length);
                SpanByteAndMemory output = default;
                var status = session.Read(ref keySb, ref output);
                if (status.IsPending)
                {
                    pending[keys[i]] = i;
                }
                else if (status.Found)
                {
                    found[i] = CopyOut(keys[i], ref output, ref values, ref used);
                }
                else
                {
                    output.Memory?.Dispose();
                }
            }
        }

        if (pending.Count == 0)
        {
            return;
        }

        using (var outputs = WaitForPendingReads(session))
        {
            while (outputs.Next())
            {
                ref var output = ref outputs.Current.Output;
                var key = outputs.Current.Key.AsReadOnlySpan().ToArray();
                if (outputs.Current.Status.Found && pending.TryGetValue(key, out var index))
                {
                    found[index] = CopyOut(key, ref output, ref values, ref used);
                }
                else
                {
                    output.Memory?.Dispose();
                }
            }
        }
    }

    private static Range CopyOut(ReadOnlySpan<byte> key, ref SpanByteAndMemory output, ref byte[] values, ref int used)
    {
        IMemoryOwner<byte>? memory = output.IsSpanByte ? null : output.Memory;
        using (memory)
        {
            var value = Verified(key, memory is null ? output.SpanByte.AsReadOnlySpan() : memory.Memory.Span[..output.Length]);
            if (values.Length - used < value.Length)
            {
                Array.Resize(ref values, Math.Max(values.Length * 2, used + value.Length));
            }

            value.CopyTo(values.AsSpan(used));
            used += value.Length;
            return new Range(used - value.Length, used);
        }
    }

    private static byte[] ToArray(ReadOnlySpan<byte> key, ref SpanByteAndMemory output)
    {
        if (output.IsSpanByte)
        {
            return Verified(key, output.SpanByte.AsReadOnlySpan()).ToArray();
        }

        using IMemoryOwner<byte> memory = output.Memory;
        return Verified(key, memory.Memory.Span[..output.Length]).ToArray();
    }

    /// <summary>Writes <paramref name="value"/> followed by its checksum (a copy; see the overload that needs none).</summary>
    public static void Upsert(Session session, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        var length = value.Length + ChecksumLength;
        byte[]? rented = null;
        var stored = length <= StackCopyLimit ? stackalloc byte[length] : (rented = ArrayPool<byte>.Shared.Rent(length)).AsSpan(0, length);
        try
        {
            value.CopyTo(stored);
            Upsert(session, key, stored, value.Length);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>
    /// Writes the first <paramref name="valueLength"/> bytes of <paramref name="buffer"/> as the value: its checksum
    /// goes into the <see cref="ChecksumLength"/> bytes after them, so the caller's buffer is stored without a copy.
    /// </summary>
    public static void Upsert(Session session, ReadOnlySpan<byte> key, Span<byte> buffer, int valueLength)
    {
        var stored = buffer[..(valueLength + ChecksumLength)];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(stored[valueLength..], Checksum(key, stored[..valueLength]));
        fixed (byte* k = key)
        fixed (byte* v = stored)
        {
            var keySb = SpanByte.FromPointer(k, key.Length);
            var valueSb = SpanByte.FromPointer(v, stored.Length);
            session.Upsert(ref keySb, ref valueSb);
        }
    }

    public static void Delete(Session session, ReadOnlySpan<byte> key)
    {
        fixed (byte* k = key)
        {
            var keySb = SpanByte.FromPointer(k, key.Length);
            var status = session.Delete(ref keySb);
            if (status.IsPending)
            {
                session.CompletePending(wait: true);
            }
        }
    }

    /// <summary>
    /// When the recovered index checkpoint had no recorded checksums (<see cref="IndexChecksums"/>), checks it against
    /// the log files read before recovery (whose records were checked then): FasterKV's index checkpoint (ht.dat,
    /// ofb.dat) carries no checksum, and a damaged bucket silently hides a key or leads to an older version of it. For
    /// every key, the latest valid record in the log must be what a read through the index returns (same length and
    /// checksum). Throws <see cref="InvalidDataException"/> naming the index checkpoint files on the first disagreement.
    /// </summary>
    public void VerifyIndexAgainstLog(Session session)
    {
        var latest = _recoveredRecords ?? [];
        _recoveredRecords = null;
        foreach (var (key, record) in latest)
        {
            bool found;
            byte[] read;
            try
            {
                found = TryRead(session, key, out read);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A damaged bucket can send FasterKV's read to an address that holds no record.
                throw CorruptIndex(key, $"fails ({e.GetType().Name}: {e.Message})", e);
            }

            if (found == record.IsDeletion || (found && (read.Length != record.Length || Checksum(key, read) != record.Checksum)))
            {
                throw CorruptIndex(key, found ? (record.IsDeletion ? "finds a record the log deleted" : "returns another version than the log's latest") : "misses the log's latest record", null);
            }
        }
    }

    private InvalidDataException CorruptIndex(byte[] key, string what, Exception? inner)
    {
        var files = Directory.Exists(Path.Combine(_checkpointDir, "index-checkpoints"))
            ? string.Join(", ", Directory.EnumerateFiles(Path.Combine(_checkpointDir, "index-checkpoints"), "*", SearchOption.AllDirectories))
            : "(none)";
        return new InvalidDataException(
            $"FasterKV index checkpoint in '{_checkpointDir}' is corrupt: a read through the index of key {Convert.ToHexString(key.AsSpan(0, Math.Min(key.Length, 32)))} {what}; index files: {files}",
            inner);
    }

    /// <summary>A durable fold-over checkpoint of index and log.</summary>
    public void Checkpoint()
    {
        WaitForCheckpointInFlight();
        var (success, _) = _kv.TakeFullCheckpointAsync(CheckpointType.FoldOver).AsTask().GetAwaiter().GetResult();
        if (!success)
        {
            throw new IOException($"FasterKV checkpoint into '{_checkpointDir}' failed");
        }

        SyncNewNames();
    }

    /// <summary>
    /// A checkpoint of the hash index alone. It is fuzzy: writes may run meanwhile, because recovery replays the log
    /// from the address where this checkpoint began up to the log checkpoint taken after it (<see cref="CheckpointLog"/>).
    /// </summary>
    public void CheckpointIndex()
    {
        WaitForCheckpointInFlight();
        var (success, _) = _kv.TakeIndexCheckpointAsync().AsTask().GetAwaiter().GetResult();
        if (!success)
        {
            throw new IOException($"FasterKV index checkpoint into '{_checkpointDir}' failed");
        }

        SyncNewNames();
    }

    /// <summary>
    /// FASTER creates a checkpoint's directories and files, and new log segment files, without syncing their parent
    /// directories; once the raft log is truncated behind a checkpoint, losing one of those names in a power cut would
    /// lose acknowledged writes. So every completed checkpoint makes the names under the checkpoint directory and the
    /// data directory (segment files) durable before it counts as taken; first it records the checksums of a new index
    /// checkpoint's files (<see cref="IndexChecksums"/>), which the next open checks instead of every key.
    /// </summary>
    private void SyncNewNames()
    {
        if (_checkpointWrites.Failure is { } failure)
        {
            // Not a checkpoint: its files may not read back. The previous one is kept (and the caller's log with it).
            throw new IOException($"FasterKV checkpoint into '{_checkpointDir}' failed: {failure.Message}", failure);
        }

        IndexChecksums.RecordMissing(_checkpointDir);
        DurableDirectory.SyncTree(_checkpointDir);
        DurableDirectory.Sync(Path.GetDirectoryName(_checkpointDir)!);
    }

    /// <summary>A durable fold-over checkpoint of the log alone; recovery pairs it with the last index checkpoint.</summary>
    public void CheckpointLog() => BeginLogCheckpoint().GetAwaiter().GetResult();

    /// <summary>
    /// Starts a fold-over checkpoint of the log alone and returns once it has passed its version switch: the log's
    /// final address for it is fixed and flushing, and every operation from now on belongs to the next version, lies
    /// past that address and is not part of it. The caller holds writes off only until then; the returned task
    /// completes when the checkpoint is durable (its metadata committed), after which FASTER deletes the segment files
    /// below the begin address it recorded. A crash before that commit recovers the previous checkpoint.
    /// </summary>
    public Task BeginLogCheckpoint()
    {
        WaitForCheckpointInFlight();
        var switched = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _phases.Arm(switched);
        if (!_kv.TryInitiateHybridLogCheckpoint(out _, CheckpointType.FoldOver))
        {
            _phases.Disarm();
            throw new IOException($"FasterKV log checkpoint into '{_checkpointDir}' failed to start: another checkpoint is under way");
        }

        // Runs the state machine on this thread up to the flush it waits for (past the version switch, normally).
        var completion = _kv.CompleteCheckpointAsync().AsTask();
        var durable = SyncNewNamesAfter(completion);
        Volatile.Write(ref _checkpointInFlight, durable);
        Task.WaitAny(switched.Task, completion);
        _phases.Disarm();
        if (completion.IsFaulted)
        {
            throw new IOException($"FasterKV log checkpoint into '{_checkpointDir}' failed", completion.Exception);
        }

        return durable;
    }

    // (A continuation, not an async method: this class is compiled unsafe, where await is not allowed.)
    private Task SyncNewNamesAfter(Task checkpoint) =>
        checkpoint.ContinueWith(
            done =>
            {
                done.GetAwaiter().GetResult(); // a failed checkpoint stays failed, names unsynced
                SyncNewNames();
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

    /// <summary>The phases the last <see cref="BeginLogCheckpoint"/> went through up to its version switch, with when.</summary>
    public string LastVersionSwitchPhases => _phases.Reached;

    /// <summary>FasterKV runs one checkpoint at a time: a new one (or closing the store) waits for a log checkpoint still being written.</summary>
    public void WaitForCheckpointInFlight()
    {
        var inFlight = Volatile.Read(ref _checkpointInFlight);
        if (!inFlight.IsCompleted)
        {
            try
            {
                inFlight.GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Its owner saw and reported the failure; a checkpoint taken now starts from the previous durable one.
            }
        }
    }

    /// <summary>Tests: called (inside FASTER's state transition) before the store enters each checkpoint phase.</summary>
    internal Action<Phase>? OnCheckpointPhaseForTest
    {
        get => _phases.ForTest;
        set => _phases.ForTest = value;
    }

    public void Dispose()
    {
        WaitForCheckpointInFlight();
        _kv.Dispose();
        _checkpoints.Dispose();
        _device.Dispose();
    }
}

/// <summary>
/// Watches FasterKV's checkpoint state machine: signals the log checkpoint's version switch, which is complete once
/// the machine enters WAIT_FLUSH (every thread moved to the next version and the final address is fixed).
/// </summary>
internal sealed class CheckpointPhases : IStateMachineCallback
{
    private TaskCompletionSource? _switched;
    private long _armedAt;
    private string _reached = string.Empty;

    public Action<Phase>? ForTest { get; set; }

    /// <summary>When the last armed checkpoint entered each phase while its caller waited for the version switch (later phases too when they came that fast), for the log line: where a slow switch waited.</summary>
    public string Reached => Volatile.Read(ref _reached);

    public void Arm(TaskCompletionSource switched)
    {
        Volatile.Write(ref _reached, string.Empty);
        Volatile.Write(ref _armedAt, System.Diagnostics.Stopwatch.GetTimestamp());
        Volatile.Write(ref _switched, switched);
    }

    public void Disarm() => Volatile.Write(ref _switched, null);

    public void BeforeEnteringState<Key, Value>(SystemState next, FasterKV<Key, Value> faster)
    {
        // FASTER runs this inside its transition, after the phase's own work (WAIT_FLUSH: final address fixed, flush issued).
        if (Volatile.Read(ref _switched) is { } switched)
        {
            var at = System.Diagnostics.Stopwatch.GetElapsedTime(Volatile.Read(ref _armedAt)).TotalSeconds;
            Volatile.Write(ref _reached, $"{_reached}{(_reached.Length == 0 ? string.Empty : ", ")}{next.Phase} +{at:F3}s");
            if (next.Phase == Phase.WAIT_FLUSH)
            {
                switched.TrySetResult();
            }
        }

        ForTest?.Invoke(next.Phase);
    }
}
