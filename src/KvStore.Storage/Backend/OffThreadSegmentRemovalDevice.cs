using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// The FasterKV log device with segment files deleted off the writer's path and gradually. FASTER deletes the
/// segments below a new begin address from an epoch action, run by whichever thread next refreshes its epoch — most
/// often the applier's, in the middle of a write txn. After a defrag that is hundreds of MB at once, and on a file
/// system that discards freed blocks when its journal commits (ext4 mounted with <c>discard</c>), the WAL's next
/// fsync waits for all of it (a defrag's worst put started where the deletes did, ~1 s). So segments go one at a time
/// on a background task, each shrunk in <see cref="ShrinkStepBytes"/> steps with an fsync after each, so that a
/// journal commit frees at most one step and the WAL's fsyncs get in between. Only how, not when, changes: FASTER
/// asks for the delete after the checkpoint recording the new begin address is committed, and nothing reads below it.
/// </summary>
internal sealed class OffThreadSegmentRemovalDevice(IDevice inner) : StorageDeviceBase(inner.FileName, inner.SectorSize, inner.Capacity)
{
    private const long ShrinkStepBytes = 4L << 20;

    private readonly object _lock = new();
    private Task _removals = Task.CompletedTask;

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
                _ =>
                {
                    Shrink($"{FileName}.{segment}");
                    inner.RemoveSegmentAsync(segment, callback, result);
                },
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default);
        }
    }

    private static void Shrink(string path)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
            for (var length = file.Length - ShrinkStepBytes; length > 0; length -= ShrinkStepBytes)
            {
                file.SetLength(length);
                file.Flush(flushToDisk: true);
            }
        }
        catch (IOException)
        {
            // Gone already, or not shrinkable: the delete that follows is what matters.
        }
    }

    public override long GetFileSize(int segment) => inner.GetFileSize(segment);

    public override bool TryComplete() => inner.TryComplete();

    /// <summary>Waits for queued deletes first: a restore may put a new store's segment of the same name in this directory.</summary>
    public override void Dispose()
    {
        Task removals;
        lock (_lock)
        {
            removals = _removals;
        }

        removals.GetAwaiter().GetResult();
        inner.Dispose();
    }
}
