using System.Runtime.InteropServices;
using FASTER.core;
using KvStore.Storage.Backend;

namespace KvStore.Testing;

/// <summary>
/// A FASTER device (test only) around a real file device that can simulate a power cut. FASTER's files are opened
/// write-through (O_SYNC), so a write is on the disk once its completion is reported; until then it sits in the
/// "volatile layer" of this model. <see cref="CutPower"/> freezes the device: writes still in flight are never
/// reported as done (their callers see an I/O error), and once the owner has closed the device,
/// <see cref="ApplyLoss"/> rewrites the files so that, sector by sector, each of those writes reached the disk, or
/// an earlier one of them, or none: an arbitrary subset dropped or torn at sector granularity.
/// </summary>
internal sealed class PowerLossDevice : ForwardingDevice
{
    private readonly Action? _writeAfterCut;
    private readonly object _lock = new();

    // Per (segment, sector): the content before the first write still in flight, then each in-flight write in order.
    private readonly Dictionary<(int Segment, long Sector), List<(long Write, byte[] Data)>> _volatile = [];
    private readonly HashSet<long> _inFlight = [];
    private long _nextWrite;
    private long _cutAtWrite = -1;
    private bool _cut;
    private bool _freeze;
    private bool _discard;
    private readonly List<(DeviceIOCompletionCallback Callback, uint Bytes, object Context)> _held = []; // frozen completions
    private int _pendingInner;
    private TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <param name="writeAfterCut">Called when the owner issues a write after a freezing cut (it never completes): the abandoned owner went on.</param>
    public PowerLossDevice(IDevice inner, Action? writeAfterCut = null)
        : base(inner)
    {
        _writeAfterCut = writeAfterCut;
        _drained.SetResult();
    }

    public bool IsCut
    {
        get
        {
            lock (_lock)
            {
                return _cut;
            }
        }
    }

    /// <summary>Writes issued but not yet reported complete at this moment.</summary>
    public int InFlight
    {
        get
        {
            lock (_lock)
            {
                return _inFlight.Count;
            }
        }
    }

    /// <summary>From now on nothing more reaches the disk; in-flight writes fail.</summary>
    public void CutPower() => CutPower(freeze: false);

    /// <summary>
    /// From now on nothing more reaches the disk. Without <paramref name="freeze"/>, in-flight and later writes fail
    /// with EIO; with it they never complete at all, as for a process that died with the machine (FasterKV waits for
    /// a failed flush forever, so its owner is abandoned rather than closed).
    /// </summary>
    public void CutPower(bool freeze)
    {
        lock (_lock)
        {
            _cut = true;
            _freeze = freeze;
        }
    }

    /// <summary>The write <see cref="CutPowerAtWrite"/> cut: its segment, offset in the segment and length.</summary>
    public (int Segment, ulong Offset, uint Length)? WriteAtCut { get; private set; }

    /// <summary>
    /// Cuts the power (without freezing) while the <paramref name="writesFromNow"/>-th write from now (0 = the next) is
    /// in flight: that write goes to the file as issued but fails, and so does every later one. The cut then falls on
    /// a chosen write, whatever the machine's load, where a cut from another thread has to catch a write in flight.
    /// </summary>
    public void CutPowerAtWrite(long writesFromNow)
    {
        lock (_lock)
        {
            _cutAtWrite = _nextWrite + writesFromNow;
        }
    }

    /// <summary>
    /// After the owner stopped: waits for the real writes to finish, then rewrites each sector touched by a write that
    /// was in flight at the cut with a randomly chosen version (the one before, or one of the in-flight writes).
    /// Returns how many sectors changed from what the real writes left.
    /// </summary>
    public async Task<int> ApplyLossAsync(Random rng, TimeSpan timeout)
    {
        Task drained;
        lock (_lock)
        {
            drained = _drained.Task;
        }

        await drained.WaitAsync(timeout);
        var changed = 0;
        lock (_lock)
        {
            foreach (var ((segment, sector), versions) in _volatile)
            {
                var keep = rng.Next(versions.Count); // 0 = nothing of the in-flight writes reached this sector
                if (keep == versions.Count - 1)
                {
                    continue; // the last write is what the file holds already
                }

                using var f = new FileStream(SegmentFile(segment), FileMode.OpenOrCreate, FileAccess.Write);
                f.Position = sector * SectorSize;
                f.Write(versions[keep].Data);
                f.Flush(flushToDisk: true);
                changed++;
            }

            _volatile.Clear();
        }

        return changed;
    }

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
    {
        var data = new byte[numBytesToWrite];
        Marshal.Copy(sourceAddress, data, 0, data.Length);
        var id = -1L;
        bool cut;
        bool discard;
        var held = false;
        lock (_lock)
        {
            cut = _cut;
            discard = _discard;
            if (_cut)
            {
                if (_freeze && !_discard)
                {
                    _held.Add((callback, numBytesToWrite, context));
                    held = true;
                }
            }
            else
            {
                id = _nextWrite++;
                _inFlight.Add(id);
                if (id == _cutAtWrite)
                {
                    _cut = true; // this write is in flight at the cut: its completion below reports the failure
                    WriteAtCut = (segmentId, destinationAddress, numBytesToWrite);
                }

                RememberVolatile(id, segmentId, (long)destinationAddress, data);
                if (_pendingInner++ == 0)
                {
                    _drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
            }
        }

        if (held)
        {
            _writeAfterCut?.Invoke();
            return;
        }

        if (cut)
        {
            // Discarding: done, and nothing reaches the file; otherwise EIO, the machine is off.
            callback(discard ? 0 : 5u, discard ? numBytesToWrite : 0, context);
            return;
        }

        Inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, (error, bytes, ctx) =>
        {
            bool report;
            bool silent;
            bool discarding;
            TaskCompletionSource? drained = null;
            lock (_lock)
            {
                report = !_cut;
                discarding = _discard;
                silent = _cut && _freeze && !_discard;
                if (silent)
                {
                    _held.Add((callback, (uint)bytes, ctx));
                }

                _inFlight.Remove(id);
                if (report)
                {
                    // Reported done: this write is durable, so it leaves the volatile layer.
                    ForgetVolatile(id, segmentId, (long)destinationAddress, data.Length);
                }

                if (--_pendingInner == 0)
                {
                    drained = _drained;
                }
            }

            if (!silent)
            {
                callback(report || discarding ? error : 5, report || discarding ? bytes : 0, ctx);
            }

            drained?.TrySetResult();
        }, context);
    }

    /// <summary>
    /// Lets an abandoned owner (frozen by <see cref="CutPower(bool)"/>) finish instead of waiting forever, for instance
    /// spinning on a flush: every write held since the cut, and every later one, is reported done without reaching
    /// the files. Only once nothing else uses those files (the restarted owner works on a copy of them).
    /// </summary>
    public void ReleaseDiscarding()
    {
        List<(DeviceIOCompletionCallback Callback, uint Bytes, object Context)> held;
        lock (_lock)
        {
            _discard = true;
            held = [.. _held];
            _held.Clear();
        }

        foreach (var (callback, bytes, context) in held)
        {
            callback(0, bytes, context);
        }
    }

    private string SegmentFile(int segment) => $"{FileName}.{segment}";

    /// <summary>Records, per sector, the content before the first in-flight write (read from the file) and this write's bytes.</summary>
    private void RememberVolatile(long id, int segment, long offset, byte[] data)
    {
        var size = (int)SectorSize;
        for (var at = 0; at < data.Length; at += size)
        {
            var sector = (offset + at) / size;
            if (!_volatile.TryGetValue((segment, sector), out var versions))
            {
                versions = [(-1, ReadSector(segment, sector))];
                _volatile[(segment, sector)] = versions;
            }

            var chunk = new byte[size];
            data.AsSpan(at, Math.Min(size, data.Length - at)).CopyTo(chunk);
            versions.Add((id, chunk));
        }
    }

    /// <summary>
    /// A write reported done is durable: in each of its sectors it becomes the base version, and only writes issued
    /// after it stay volatile (one issued before it but still running is treated as overwritten by it).
    /// </summary>
    private void ForgetVolatile(long id, int segment, long offset, int length)
    {
        var size = (int)SectorSize;
        for (var at = 0; at < length; at += size)
        {
            var key = (segment, (offset + at) / size);
            if (_volatile.TryGetValue(key, out var versions))
            {
                var mine = versions.FindIndex(v => v.Write == id);
                versions.RemoveRange(0, mine);
                versions[0] = (-1, versions[0].Data);
                if (versions.Count == 1)
                {
                    _volatile.Remove(key);
                }
            }
        }
    }

    private byte[] ReadSector(int segment, long sector)
    {
        var buffer = new byte[SectorSize];
        var path = SegmentFile(segment);
        if (File.Exists(path))
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            f.Position = sector * SectorSize;
            _ = f.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        }

        return buffer;
    }
}
