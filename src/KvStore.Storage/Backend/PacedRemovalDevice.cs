using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// The store's log device, which removes obsolete segment files a few megabytes at a time. After a log compaction
/// FASTER deletes every segment file below the new begin address at once, hundreds of megabytes; the file system
/// frees (and, mounted with <c>discard</c>, discards) all of their blocks in the next journal commit, and the WAL's
/// fsync that forces that commit waited ~0.3 s for it: the worst put of a defragment. Each file is shrunk here in
/// steps with a pause after each, so a journal commit frees one step at most, and only then deleted. Reads and writes
/// go straight to the wrapped device.
/// </summary>
/// <remarks>
/// Shrinking a file FASTER asked to delete is as safe as deleting it: FASTER removes a segment only once the
/// checkpoint that records a begin address past it is committed, and nothing reads below the begin address.
/// </remarks>
internal sealed class PacedRemovalDevice(IDevice inner, long stepBytes, TimeSpan pause)
    : StorageDeviceBase(inner.FileName, inner.SectorSize, inner.Capacity)
{
    private readonly object _lock = new();
    private Task _removals = Task.CompletedTask; // one file at a time, in the order FASTER asked
    private readonly CancellationTokenSource _disposing = new();
    private int _disposed;

    public override void Initialize(long segmentSize, LightEpoch? epoch = null, bool omitSegmentIdFromFilename = false)
    {
        base.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
        inner.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
    }

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);

    public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
        inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        lock (_lock)
        {
            _removals = _removals.ContinueWith(
                _ => ShrinkThenRemoveAsync(segment, callback, result),
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default).Unwrap();
        }
    }

    public override long GetFileSize(int segment) => inner.GetFileSize(segment);

    public override bool TryComplete() => inner.TryComplete();

    /// <summary>Finishes the removals FASTER asked for, without pauses, so no obsolete file outlives the store.</summary>
    public override void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _disposing.Cancel();
        Task pending;
        lock (_lock)
        {
            pending = _removals;
        }

        pending.GetAwaiter().GetResult();
        inner.Dispose();
        _disposing.Dispose();
    }

    private async Task ShrinkThenRemoveAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        try
        {
            await ShrinkAsync($"{FileName}.{segment}").ConfigureAwait(false);
        }
        catch (IOException)
        {
            // Missing or unreadable: the removal below deletes whatever is there.
        }
        catch (OperationCanceledException)
        {
            // The device is closing: the rest of the file goes at once.
        }

        inner.RemoveSegmentAsync(segment, callback, result);
    }

    private async Task ShrinkAsync(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
        for (var length = file.Length - stepBytes; length > 0; length -= stepBytes)
        {
            file.SetLength(length);
            await Task.Delay(pause, _disposing.Token).ConfigureAwait(false);
        }
    }
}
