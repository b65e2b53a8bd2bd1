using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// The FasterKV log device with segment files deleted on the thread pool. FASTER deletes the segments below a new
/// begin address from an epoch action, run by whichever thread next refreshes its epoch — most often the applier's,
/// in the middle of a write txn; after a defrag that is hundreds of MB of files, a stall of a put. Only when they are
/// deleted changes: FASTER asks for it after the checkpoint recording the new begin address is committed.
/// </summary>
internal sealed class OffThreadSegmentRemovalDevice(IDevice inner) : StorageDeviceBase(inner.FileName, inner.SectorSize, inner.Capacity)
{
    public override void Initialize(long segmentSize, LightEpoch? epoch = null, bool omitSegmentIdFromFilename = false)
    {
        base.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
        inner.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
    }

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);

    public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
        inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);

    private readonly object _drained = new();
    private int _pending;

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        lock (_drained)
        {
            _pending++;
        }

        ThreadPool.UnsafeQueueUserWorkItem(
            _ =>
            {
                try
                {
                    inner.RemoveSegmentAsync(segment, callback, result);
                }
                finally
                {
                    lock (_drained)
                    {
                        _pending--;
                        Monitor.PulseAll(_drained);
                    }
                }
            },
            null);
    }

    public override long GetFileSize(int segment) => inner.GetFileSize(segment);

    public override bool TryComplete() => inner.TryComplete();

    /// <summary>Waits for queued deletes first: a restore may put a new store's segment of the same name in this directory.</summary>
    public override void Dispose()
    {
        lock (_drained)
        {
            while (_pending > 0)
            {
                Monitor.Wait(_drained);
            }
        }

        inner.Dispose();
    }
}
