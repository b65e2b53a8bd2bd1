using System.Runtime.InteropServices;
using FASTER.core;
using FluentAssertions;
using KvStore.Storage.Backend;

namespace KvStore.Storage.Tests.Backend;

/// <summary>
/// A record's read completes on the reader's thread before the call returns; page-sized reads, and reads of a segment
/// this device cannot open, still go to the wrapped device; a removed segment's handle is not reused.
/// </summary>
public sealed class InlineReadDeviceTests : IDisposable
{
    private const int SegmentBits = 20;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void Record_read_completes_on_the_calling_thread_before_returning()
    {
        var (device, inner) = Open();
        using var _ = device;
        var contents = Segment(0, 8192, seed: 1);
        var buffer = GC.AllocateArray<byte>(4096, pinned: true);
        var caller = Environment.CurrentManagedThreadId;
        (uint Error, uint Bytes, int Thread)? completed = null;

        device.ReadAsync(0, 4096, Address(buffer), 4096, (e, n, _) => completed = (e, n, Environment.CurrentManagedThreadId), null!);

        completed.Should().Be((0u, 4096u, caller));
        buffer.Should().Equal(contents[4096..]);
        inner.Reads.Should().Be(0);
    }

    [Fact]
    public void Read_past_the_end_of_the_file_returns_the_bytes_there_are()
    {
        var (device, _) = Open();
        using var __ = device;
        var contents = Segment(0, 1000, seed: 2);
        var buffer = GC.AllocateArray<byte>(512, pinned: true);
        uint? bytes = null;

        device.ReadAsync(0, 512, Address(buffer), 512, (_, n, _) => bytes = n, null!);

        bytes.Should().Be(488);
        buffer[..488].Should().Equal(contents[512..]);
    }

    [Fact]
    public async Task Page_sized_read_goes_to_the_wrapped_device()
    {
        var (device, inner) = Open();
        using var _ = device;
        var length = (int)InlineReadDevice.MaxInlineReadBytes + 4096;
        var contents = Segment(0, length, seed: 3);
        var buffer = GC.AllocateArray<byte>(length, pinned: true);
        var done = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);

        device.ReadAsync(0, 0, Address(buffer), (uint)length, (_, n, _) => done.SetResult(n), null!);

        (await done.Task.WaitAsync(TimeSpan.FromSeconds(30))).Should().Be((uint)length);
        buffer.Should().Equal(contents);
        inner.Reads.Should().Be(1);
    }

    [Fact]
    public async Task Read_of_a_segment_without_a_file_goes_to_the_wrapped_device()
    {
        var (device, inner) = Open();
        using var _ = device;
        var buffer = GC.AllocateArray<byte>(512, pinned: true);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        device.ReadAsync(3, 0, Address(buffer), 512, (_, _, _) => done.TrySetResult(), null!);

        await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        inner.Reads.Should().Be(1);
    }

    [Fact]
    public async Task Removed_segment_is_opened_again_rather_than_read_through_its_old_handle()
    {
        var (device, _) = Open();
        using var __ = device;
        Segment(0, 4096, seed: 4);
        var buffer = GC.AllocateArray<byte>(4096, pinned: true);
        device.ReadAsync(0, 0, Address(buffer), 4096, (_, _, _) => { }, null!);
        var removed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        device.RemoveSegmentAsync(0, _ => removed.SetResult(), null!);
        await removed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var again = Segment(0, 4096, seed: 5);
        uint? bytes = null;
        device.ReadAsync(0, 0, Address(buffer), 4096, (_, n, _) => bytes = n, null!);

        bytes.Should().Be(4096);
        buffer.Should().Equal(again);
    }

    /// <summary>The address of an array on the pinned heap, which stays where it is.</summary>
    private static IntPtr Address(byte[] pinned) => Marshal.UnsafeAddrOfPinnedArrayElement(pinned, 0);

    private (InlineReadDevice Device, RecordingDevice Inner) Open()
    {
        var inner = new RecordingDevice(Devices.CreateLogDevice(_tmp.Sub("kv.log"), preallocateFile: false, deleteOnClose: false));
        var device = new InlineReadDevice(inner);
        device.Initialize(1L << SegmentBits);
        return (device, inner);
    }

    private byte[] Segment(int segment, int bytes, int seed)
    {
        var contents = new byte[bytes];
        new Random(seed).NextBytes(contents);
        File.WriteAllBytes($"{_tmp.Sub("kv.log")}.{segment}", contents);
        return contents;
    }

    /// <summary>Counts the reads that reach the wrapped device.</summary>
    private sealed class RecordingDevice(IDevice inner) : ForwardingDevice(inner)
    {
        private int _reads;

        public int Reads => Volatile.Read(ref _reads);

        public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context)
        {
            Interlocked.Increment(ref _reads);
            base.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);
        }
    }
}
