using System.Collections.Concurrent;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace KvStore.Storage.Backend;

/// <summary>
/// Reads a record from the store's segment files on the reader's own thread: a positional read through the page cache,
/// completed (FASTER's callback run) before <see cref="ReadAsync"/> returns. FASTER's file device hands every read to
/// the thread pool and reads past the page cache, so a read of a record older than the in-memory window held a pool
/// thread while it waited for another one to run the read, and many such readers at once starved the pool. Reads
/// longer than <see cref="MaxInlineReadBytes"/> (whole pages, for recovery, scans and log compaction, which FASTER issues
/// many at a time) and any read this device cannot serve go to the wrapped device as before. The WAL's own device
/// (<c>WalSegmentDevice</c>) reads the same way; this one leaves the store's writes and segment files to FASTER's device
/// and only adds read handles.
/// </summary>
internal sealed class InlineReadDevice(IDevice inner) : ForwardingDevice(inner)
{
    /// <summary>The longest read served inline: a record (a value is at most a request, 1.5 MiB by default), not a page.</summary>
    internal const uint MaxInlineReadBytes = 2u << 20;

    private readonly ConcurrentDictionary<int, SafeFileHandle> _segments = new();

    public override unsafe void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context)
    {
        int read;
        try
        {
            if (readLength > MaxInlineReadBytes)
            {
                base.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);
                return;
            }

            read = ReadFully(Segment(segmentId), new Span<byte>((void*)destinationAddress, (int)readLength), (long)sourceAddress);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            // A segment that is gone or unreadable here: the wrapped device reads it, or reports its error.
            base.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);
            return;
        }

        callback(0, (uint)read, context);
    }

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        // Nothing reads below the begin address FASTER is removing segments under, so the handle has no reader left.
        if (_segments.TryRemove(segment, out var handle))
        {
            handle.Dispose();
        }

        base.RemoveSegmentAsync(segment, callback, result);
    }

    protected override void OnDisposing()
    {
        foreach (var segment in _segments.Keys)
        {
            if (_segments.TryRemove(segment, out var handle))
            {
                handle.Dispose();
            }
        }
    }

    private SafeFileHandle Segment(int segmentId)
    {
        if (_segments.TryGetValue(segmentId, out var handle))
        {
            return handle;
        }

        var opened = File.OpenHandle(GetSegmentFilename(FileName, segmentId), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var kept = _segments.GetOrAdd(segmentId, opened);
        if (!ReferenceEquals(kept, opened))
        {
            opened.Dispose(); // another reader opened it first
        }

        return kept;
    }

    /// <summary>Reads until the span is full or the file ends (FASTER reads whole sectors, which may pass the last record).</summary>
    private static int ReadFully(SafeFileHandle file, Span<byte> buffer, long offset)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = RandomAccess.Read(file, buffer[total..], offset + total);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }
}
