using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// A FASTER device that passes every call on to another one: the base of the layers put between FASTER and a file
/// (paced segment removal, write-error recording, a test's fault injection), which override only what they change.
/// </summary>
internal abstract class ForwardingDevice(IDevice inner) : StorageDeviceBase(inner.FileName, inner.SectorSize, inner.Capacity)
{
    private int _disposed;

    protected IDevice Inner { get; } = inner;

    public override void Initialize(long segmentSize, LightEpoch? epoch = null, bool omitSegmentIdFromFilename = false)
    {
        base.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
        Inner.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
    }

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        Inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);

    public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
        Inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result) =>
        Inner.RemoveSegmentAsync(segment, callback, result);

    public override long GetFileSize(int segment) => Inner.GetFileSize(segment);

    public override bool TryComplete() => Inner.TryComplete();

    /// <summary>Runs <see cref="OnDisposing"/>, then disposes the wrapped device; once, however often it is called.</summary>
    public sealed override void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            OnDisposing();
            Inner.Dispose();
        }
    }

    /// <summary>What a layer finishes before the wrapped device is disposed.</summary>
    protected virtual void OnDisposing()
    {
    }
}
