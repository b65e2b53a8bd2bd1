using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// A FASTER log device (the store's data log, the WAL) that removes obsolete segment files a few megabytes at a time.
/// FASTER deletes every segment file below a new begin address at once, hundreds of megabytes after a defragment or a
/// raft log truncation; the file system frees (and, mounted with <c>discard</c>, discards) all of their blocks in the
/// next journal commit, and the WAL fsync that forces that commit waited ~0.15–0.3 s for it: the worst put of a
/// defragment and of a <c>--snapshot-count</c> snapshot. Here each file is first renamed out of the log's names
/// (<c>&lt;segment file&gt;.removed</c>), then shrunk in steps with a pause after each, so a journal commit frees one
/// step at most, and then deleted. Reads and writes go straight to the wrapped device.
/// </summary>
/// <remarks>
/// FASTER removes a segment only once the begin address past it is durable (a committed checkpoint, a committed WAL
/// truncation), and nothing reads below the begin address. The rename comes first, and is made durable, so a crash
/// never leaves a shortened file under a segment's name for a recovery scan of the segment files to read as a damaged
/// log; a crash's leftover <c>.removed</c> files are deleted when the device opens.
/// </remarks>
internal sealed class PacedRemovalDevice : ForwardingDevice
{
    public const string RemovedSuffix = ".removed";

    // 8 MiB per 20 ms (~400 MB/s): a defragment's ~700 MB in about two seconds, a 64 MiB WAL segment in 0.16 s.
    private const long DefaultStepBytes = 8L << 20;
    private static readonly TimeSpan DefaultPause = TimeSpan.FromMilliseconds(20);

    private readonly long _stepBytes;
    private readonly TimeSpan _pause;
    private readonly object _lock = new();
    private readonly CancellationTokenSource _disposing = new();
    private Task _removals = Task.CompletedTask; // one file at a time, in the order FASTER asked

    public PacedRemovalDevice(IDevice inner)
        : this(inner, DefaultStepBytes, DefaultPause)
    {
    }

    public PacedRemovalDevice(IDevice inner, long stepBytes, TimeSpan pause)
        : base(inner)
    {
        _stepBytes = stepBytes;
        _pause = pause;
        var directory = Path.GetDirectoryName(Path.GetFullPath(FileName))!;
        if (Directory.Exists(directory))
        {
            foreach (var leftover in Directory.EnumerateFiles(directory, Path.GetFileName(FileName) + ".*" + RemovedSuffix))
            {
                File.Delete(leftover);
            }
        }
    }

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        lock (_lock)
        {
            _removals = _removals.ContinueWith(
                _ => RemoveAsync(segment, callback, result),
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default).Unwrap();
        }
    }

    /// <summary>Finishes the removals FASTER asked for, without pauses, so no obsolete file outlives the device.</summary>
    protected override void OnDisposing()
    {
        _disposing.Cancel();
        Task pending;
        lock (_lock)
        {
            pending = _removals;
        }

        pending.GetAwaiter().GetResult();
        _disposing.Dispose();
    }

    private async Task RemoveAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        var path = $"{FileName}.{segment}";
        var removed = path + RemovedSuffix;
        var renamed = false;
        try
        {
            File.Move(path, removed, overwrite: true);
            DurableDirectory.Sync(Path.GetDirectoryName(Path.GetFullPath(path))!);
            renamed = true;
        }
        catch (IOException)
        {
            // Not there (never written): the wrapped device's removal below has nothing to do either.
        }

        // Closes the wrapped device's handles on the segment; its delete of the old name finds nothing left.
        Inner.RemoveSegmentAsync(segment, callback, result);
        if (!renamed)
        {
            return;
        }

        try
        {
            await ShrinkAsync(removed).ConfigureAwait(false);
        }
        catch (IOException)
        {
            // Gone or unreadable: the delete below takes whatever is left.
        }
        catch (OperationCanceledException)
        {
            // The device is closing: the rest of the file goes at once.
        }

        File.Delete(removed);
    }

    private async Task ShrinkAsync(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
        for (var length = file.Length - _stepBytes; length > 0; length -= _stepBytes)
        {
            file.SetLength(length);
            await Task.Delay(_pause, _disposing.Token).ConfigureAwait(false);
        }
    }
}
