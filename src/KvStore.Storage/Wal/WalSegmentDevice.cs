using System.Collections.Concurrent;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace KvStore.Storage.Wal;

/// <summary>
/// The WAL's segment files (wal.log.N) as a FASTER device that reads and writes on the calling thread. FASTER's own
/// file device queues every write to the thread pool and completes it from there: two hand-offs per WAL sync before
/// the write even starts, on the path of every acknowledged request. Here the commit's pwrite runs where FasterLog
/// issues it, so <see cref="WriteAheadLog.SyncAsync"/> sees the commit record durable as soon as the commit call
/// returns. The files are opened write-through (O_SYNC), as FASTER's device opens them: a write is on the disk when
/// it returns, and FASTER never reports a range flushed whose write failed.
/// </summary>
/// <remarks>
/// Writes on the calling thread are right for this log and no other: its writes are the tail of one page per sync
/// (a few kilobytes), and the caller of a sync waits for that write anyway. The store's data log keeps FASTER's device,
/// whose checkpoint flushes are megabytes long.
/// </remarks>
internal sealed class WalSegmentDevice : StorageDeviceBase
{
    // FASTER's file device assumes 512-byte sectors on Linux; the WAL's records are laid out (and checked by the
    // recovery scan) on that alignment.
    private const uint SectorBytes = 512;

    private readonly ConcurrentDictionary<int, SafeFileHandle> _segments = new();
    private readonly object _opening = new();
    private bool _disposed;

    public WalSegmentDevice(string fileName)
        : base(fileName, SectorBytes, Devices.CAPACITY_UNSPECIFIED)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(fileName))!);
    }

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
    {
        uint error = 0;
        try
        {
            unsafe
            {
                RandomAccess.Write(HandleOf(segmentId), new ReadOnlySpan<byte>((void*)sourceAddress, (int)numBytesToWrite), (long)destinationAddress);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            error = ErrorCodeOf(e);
        }

        // Outside the try: an exception thrown by FASTER's completion is FASTER's, not a failed write.
        callback(error, error == 0 ? numBytesToWrite : 0, context);
    }

    public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context)
    {
        uint error = 0;
        var read = 0;
        try
        {
            unsafe
            {
                read = RandomAccess.Read(HandleOf(segmentId), new Span<byte>((void*)destinationAddress, (int)readLength), (long)sourceAddress);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            error = ErrorCodeOf(e);
        }

        callback(error, (uint)read, context);
    }

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        if (_segments.TryRemove(segment, out var handle))
        {
            handle.Dispose();
        }

        try
        {
            File.Delete(GetSegmentFilename(FileName, segment));
        }
        catch (IOException)
        {
            // Left for the next open to find below the log's begin address, where nothing reads it.
        }

        callback(result);
    }

    public override void Dispose()
    {
        lock (_opening)
        {
            _disposed = true;
        }

        foreach (var segment in _segments.Keys)
        {
            if (_segments.TryRemove(segment, out var handle))
            {
                handle.Dispose();
            }
        }
    }

    private SafeFileHandle HandleOf(int segment)
    {
        if (_segments.TryGetValue(segment, out var handle))
        {
            return handle;
        }

        lock (_opening)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_segments.TryGetValue(segment, out handle))
            {
                handle = File.OpenHandle(
                    GetSegmentFilename(FileName, segment),
                    FileMode.OpenOrCreate,
                    FileAccess.ReadWrite,
                    FileShare.ReadWrite | FileShare.Delete,
                    FileOptions.WriteThrough);
                _segments[segment] = handle;
            }

            return handle;
        }
    }

    // FASTER logs the code and fails the commit; any non-zero value does that, so keep the errno where there is one.
    private static uint ErrorCodeOf(Exception e) => (e.HResult & 0xFFFF) is var code and not 0 ? (uint)code : uint.MaxValue;
}
