using FASTER.core;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Wal;

/// <summary>
/// Append-only write-ahead log on FasterLog. Every record carries its own CRC-32C (see <see cref="WalRecordCodec"/>
/// and docs/storage.md). <see cref="SyncAsync"/> is a group commit: callers that arrive while a commit is running
/// share the next one. Not thread-safe for concurrent Append calls from several threads at once (one node loop appends).
/// </summary>
public sealed partial class WriteAheadLog : IAsyncDisposable, IDisposable
{
    internal const int PageSizeBits = 22;
    // Four pages: the log is only appended to and read back at start, so memory beyond the page being filled and the
    // pages still being flushed holds nothing anyone reads.
    internal const int MemorySizeBits = 24;
    internal const int SegmentSizeBits = 26;
    internal const string LogFileName = "wal.log";

    /// <summary>
    /// Fast-commit mode makes the commit record in the log the durable commit point; FasterLog's metadata file
    /// (commits/log-commits/commit.N.0) only shortens its recovery scan. Writing it on every commit created a new
    /// O_SYNC file (and unlinked the previous one) per commit: two extra journal commits on the hot path.
    /// </summary>
    internal const int CommitMetadataEvery = 1024;

    private readonly ILogger _logger;
    private readonly string _directory;
    private readonly object _gate = new();
    private readonly List<(long Address, ulong Index)> _entryAddresses = [];
    private readonly Func<IDevice, IDevice>? _wrapLogDevice;
    private IDevice _device = null!;
    private FasterLog _log = null!;
    private WalCommitManager? _commitManager;
    private byte[] _buffer = new byte[64 * 1024];
    private WalReplay _replay = new();
    private (long Address, WalHardState State)? _lastHardState;
    private (long Address, WalSnapshotMarker Marker)? _lastSnapshot;

    // Group commit state, guarded by _gate.
    private long _durableAddress;
    private Task? _round;
    private long _syncedSegment = -1;
    private bool _disposed;
    private int _commitRounds;

    private WriteAheadLog(string directory, ILogger logger, Func<IDevice, IDevice>? wrapLogDevice)
    {
        _directory = directory;
        _logger = logger;
        _wrapLogDevice = wrapLogDevice;
    }

    /// <summary>The directory holding the log segments (wal.log.N) and FasterLog's commit metadata (commits/).</summary>
    public string Directory => _directory;

    /// <summary>Opens (or creates) the log, repairs a torn tail and reads every record once for <see cref="Replay"/>.</summary>
    /// <param name="walDirectory">The directory of the log segments and commit metadata.</param>
    /// <param name="logger">Where recovery reports what it repaired.</param>
    /// <param name="wrapLogDevice">Tests only: wraps the segment device (power-cut simulation); null in the server.</param>
    public static WriteAheadLog Open(string walDirectory, ILogger logger, Func<IDevice, IDevice>? wrapLogDevice = null)
    {
        ArgumentNullException.ThrowIfNull(walDirectory);
        ArgumentNullException.ThrowIfNull(logger);
        var full = Path.GetFullPath(walDirectory);
        FinishInterruptedRepair(full);
        var created = !System.IO.Directory.Exists(full);
        System.IO.Directory.CreateDirectory(full);
        var wal = new WriteAheadLog(full, logger, wrapLogDevice);
        try
        {
            if (created)
            {
                SyncParent(full);
            }

            // Decide on the raw files before FasterLog recovers: its fast-commit recovery misreads a torn commit record.
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            var scan = WalPhysicalScan.Run(full, LogFileName, SegmentSizeBits);
            var scanned = System.Diagnostics.Stopwatch.GetTimestamp();
            if (scan.BreakAddress >= 0 && !scan.DamageIsTornLastWrite)
            {
                // Not a tear of the last, unacknowledged write: data that may have been acknowledged is unreadable.
                throw new WalCorruptException(
                    wal.FileOf(scan.BreakAddress),
                    OffsetOf(scan.BreakAddress),
                    $"{scan.BreakReason}, followed by an intact commit record at offset {OffsetOf(scan.FirstCommitAfterBreak)} of '{wal.FileOf(scan.FirstCommitAfterBreak)}'");
            }

            if (!scan.IsClean)
            {
                wal.RepairTail(scan);
            }

            wal.OpenLog();
            if (!wal.ScanAndValidate(out var validRecords, out var tornAt))
            {
                // Only reachable if FasterLog reads the files differently from the physical scan.
                wal._logger.LogWarning(
                    "WAL torn tail found by FasterLog's scan: record in '{File}' at offset {Offset} fails its checksum and nothing valid follows; keeping {Count} records",
                    wal.FileOf(tornAt),
                    OffsetOf(tornAt),
                    validRecords.Count);
                wal.CloseLog();
                wal.RebuildLog(validRecords);
                wal.OpenLog();
                if (!wal.ScanAndValidate(out _, out tornAt))
                {
                    throw new WalCorruptException(wal.FileOf(tornAt), OffsetOf(tornAt), "torn tail still present after repair");
                }
            }

            wal._logger.LogInformation(
                "WAL opened: {Entries} entries after the snapshot marker, {MiB:F0} MiB of log; physical scan {ScanSeconds:F3}s, FasterLog recovery and replay {ReplaySeconds:F3}s",
                wal._replay.Entries.Count,
                (wal._log.TailAddress - wal._log.BeginAddress) / 1048576.0,
                System.Diagnostics.Stopwatch.GetElapsedTime(started, scanned).TotalSeconds,
                System.Diagnostics.Stopwatch.GetElapsedTime(scanned).TotalSeconds);
            return wal;
        }
        catch
        {
            wal.CloseLog();
            throw;
        }
    }

    /// <summary>What was on disk at Open: the last hard state, the last snapshot marker, and the entries after it.</summary>
    public WalReplay Replay() => _replay;

    /// <summary>Appends an entry (buffered, not yet durable).</summary>
    public void Append(WalEntry entry)
    {
        lock (_gate)
        {
            var size = WalRecordCodec.EntryHeaderSize + entry.Data.Length;
            var buffer = BufferOf(size);
            var length = WalRecordCodec.EncodeEntry(entry, buffer);
            var address = _log.Enqueue(buffer.AsSpan(0, length));
            _entryAddresses.Add((address, entry.Index));
        }
    }

    /// <summary>Appends a hard state record (buffered, not yet durable).</summary>
    public void Append(WalHardState state)
    {
        lock (_gate)
        {
            var length = WalRecordCodec.EncodeHardState(state, _buffer);
            var address = _log.Enqueue(_buffer.AsSpan(0, length));
            _lastHardState = (address, state);
        }
    }

    /// <summary>Appends a snapshot marker (buffered, not yet durable).</summary>
    public void Append(WalSnapshotMarker marker)
    {
        lock (_gate)
        {
            var length = WalRecordCodec.EncodeSnapshot(marker, BufferOf(WalRecordCodec.SnapshotRecordSize(marker)));
            var address = _log.Enqueue(_buffer.AsSpan(0, length));
            _lastSnapshot = (address, marker);
        }
    }

    /// <summary>
    /// Makes everything appended before the call durable. Concurrent callers share one commit: a caller that
    /// arrives while a commit is running waits for it and then joins (or starts) the single next one.
    /// </summary>
    public async ValueTask SyncAsync(CancellationToken ct = default)
    {
        long target;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            target = _log.TailAddress;
        }

        while (true)
        {
            Task round;
            TaskCompletionSource? started = null;
            long roundTarget = 0;
            lock (_gate)
            {
                if (_durableAddress >= target)
                {
                    return;
                }

                if (_round is null)
                {
                    started = new TaskCompletionSource();
                    roundTarget = _log.TailAddress;
                    _round = started.Task;
                }

                round = _round;
            }

            if (started is not null)
            {
                // The caller that opens a round starts its commit itself (outside the gate), so a sync costs no hop
                // onto the thread pool before the write; the round ends on the thread that completes the write.
                _ = RunCommitRoundAsync(roundTarget, started);
            }

            await round.WaitAsync(ct).ConfigureAwait(false);
        }
    }

    private async Task RunCommitRoundAsync(long target, TaskCompletionSource round)
    {
        Exception? failure = null;
        var durable = 0L;
        try
        {
            // The segment device writes on this thread, write-through (O_SYNC): once the commit record's range counts
            // as flushed, it is on the disk, and FASTER never counts a range flushed whose write failed. That is known
            // when the call returns, before FASTER's own commit completion has gone through the thread pool, which is
            // only waited for when the write ran elsewhere (another thread held the log's epoch) or nothing was left
            // to commit.
            if (!_log.CommitStrongly(out var commitTail, out var commitNum))
            {
                // Nothing left to commit: a commit already under way covers the target.
                await _log.WaitForCommitAsync(target).ConfigureAwait(false);
            }
            else if (_log.FlushedUntilAddress >= commitTail)
            {
                durable = commitTail;
            }
            else
            {
                await _log.WaitForCommitAsync(commitTail, commitNum).ConfigureAwait(false);
            }

            Interlocked.Increment(ref _commitRounds);
            var segment = target >> SegmentSizeBits;
            if (segment != Volatile.Read(ref _syncedSegment))
            {
                // A new segment file was created: make its directory entry durable too.
                NativeFile.SyncDirectory(_directory);
                Volatile.Write(ref _syncedSegment, segment);
            }
        }
        catch (Exception e)
        {
            failure = e;
        }

        lock (_gate)
        {
            _durableAddress = Math.Max(_durableAddress, Math.Max(durable, _log.CommittedUntilAddress));
            _round = null;
        }

        // Completed outside the gate: the waiters continue on this thread.
        if (failure is null)
        {
            round.SetResult();
        }
        else
        {
            round.SetException(failure);
        }
    }

    /// <summary>
    /// Drops the head of the log: records before the first entry with Index &gt;= index. The latest hard state
    /// and snapshot marker are re-appended first when they would be dropped, so Replay keeps them.
    /// </summary>
    public void ReleaseBefore(ulong index)
    {
        lock (_gate)
        {
            var cut = _entryAddresses.FindIndex(e => e.Index >= index);
            var until = cut < 0 ? _log.TailAddress : _entryAddresses[cut].Address;
            if (until <= _log.BeginAddress)
            {
                return;
            }

            if (_lastSnapshot is { } snap && snap.Address < until)
            {
                // Re-appended after records that stay: it must not discard them, whatever the original did (everything
                // before the original marker is cut anyway).
                var marker = snap.Marker with { ReplacesLog = false };
                var length = WalRecordCodec.EncodeSnapshot(marker, BufferOf(WalRecordCodec.SnapshotRecordSize(marker)));
                _lastSnapshot = (_log.Enqueue(_buffer.AsSpan(0, length)), marker);
            }

            if (_lastHardState is { } hs && hs.Address < until)
            {
                var length = WalRecordCodec.EncodeHardState(hs.State, _buffer);
                _lastHardState = (_log.Enqueue(_buffer.AsSpan(0, length)), hs.State);
            }

            _log.Commit(spinWait: true);
            _log.TruncateUntil(until);
            _log.Commit(spinWait: true);
            _entryAddresses.RemoveRange(0, cut < 0 ? _entryAddresses.Count : cut);
            _durableAddress = Math.Max(_durableAddress, _log.CommittedUntilAddress);
        }

        _logger.LogInformation("WAL head released before index {Index}", index);
    }

    public void Dispose()
    {
        Task? round;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            round = _round;
        }

        try
        {
            round?.GetAwaiter().GetResult();
            _log.Commit(spinWait: true);
        }
        finally
        {
            CloseLog();
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>How many group commits ran (tests check that concurrent callers share them).</summary>
    internal int CommitRounds => Volatile.Read(ref _commitRounds);

    internal string FileOf(long address) => Path.Combine(_directory, $"{LogFileName}.{address >> SegmentSizeBits}");

    internal static long OffsetOf(long address) => address & ((1L << SegmentSizeBits) - 1);

    private byte[] BufferOf(int size)
    {
        if (_buffer.Length < size)
        {
            _buffer = new byte[Math.Max(size, _buffer.Length * 2)];
        }

        return _buffer;
    }

    private void OpenLog()
    {
        _device = new PacedRemovalDevice(new WalSegmentDevice(Path.Combine(_directory, LogFileName)));
        if (_wrapLogDevice is not null)
        {
            _device = _wrapLogDevice(_device);
        }

        var settings = new FasterLogSettings
        {
            LogDevice = _device,
            PageSizeBits = PageSizeBits,
            MemorySizeBits = MemorySizeBits,
            SegmentSizeBits = SegmentSizeBits,
            LogCommitManager = _commitManager = new WalCommitManager(Path.Combine(_directory, "commits"), CommitMetadataEvery),
            FastCommitMode = true,
            AutoRefreshSafeTailAddress = false,
        };
        _log = new FasterLog(settings);
        _durableAddress = _log.CommittedUntilAddress;
        _syncedSegment = -1;
    }

    private void CloseLog()
    {
        _log?.Dispose();
        _commitManager?.Dispose();
        _device?.Dispose();
        _commitManager = null;
        _log = null!;
        _device = null!;
    }

    private static void SyncParent(string directory)
    {
        var parent = Path.GetDirectoryName(directory);
        if (parent is not null)
        {
            NativeFile.SyncDirectory(parent);
        }
    }
}
