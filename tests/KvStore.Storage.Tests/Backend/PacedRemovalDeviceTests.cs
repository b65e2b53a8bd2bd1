using System.Diagnostics;
using FASTER.core;
using FluentAssertions;
using KvStore.Storage.Backend;

namespace KvStore.Storage.Tests.Backend;

/// <summary>Obsolete segment files go a step at a time, in order, and all of them before the device closes.</summary>
public sealed class PacedRemovalDeviceTests : IDisposable
{
    private const int SegmentBits = 16;
    private const int Step = 4096;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task Removes_each_segment_after_shrinking_it_in_paced_steps()
    {
        var pause = TimeSpan.FromMilliseconds(40);
        using var device = Open(pause);
        var files = WriteSegments(2, 4 * Step);
        var removed = new List<int>();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = Stopwatch.StartNew();

        device.RemoveSegmentAsync(0, _ => Record(removed, 0), null!);
        device.RemoveSegmentAsync(1, _ => { Record(removed, 1); done.SetResult(); }, null!);
        File.Exists(files[0]).Should().BeTrue("the removal is paced, not done on the caller's thread");

        await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        removed.Should().Equal(0, 1);
        files.Should().OnlyContain(f => !File.Exists(f));
        // Each 16 KiB file shrinks to 12, 8 and 4 KiB with a pause after each step before it is deleted.
        clock.Elapsed.Should().BeGreaterThanOrEqualTo(6 * pause);
    }

    [Fact]
    public void Dispose_finishes_pending_removals_without_waiting_out_the_pauses()
    {
        using var device = Open(TimeSpan.FromMinutes(10));
        var files = WriteSegments(3, 64 * Step);
        var removed = 0;
        for (var segment = 0; segment < files.Count; segment++)
        {
            device.RemoveSegmentAsync(segment, _ => Interlocked.Increment(ref removed), null!);
        }

        var clock = Stopwatch.StartNew();
        device.Dispose();

        clock.Elapsed.Should().BeLessThan(TimeSpan.FromMinutes(1));
        removed.Should().Be(files.Count);
        files.Should().OnlyContain(f => !File.Exists(f));
    }

    private static void Record(List<int> removed, int segment)
    {
        lock (removed)
        {
            removed.Add(segment);
        }
    }

    private PacedRemovalDevice Open(TimeSpan pause)
    {
        var device = new PacedRemovalDevice(
            Devices.CreateLogDevice(_tmp.Sub("kv.log"), preallocateFile: false, deleteOnClose: false), Step, pause);
        device.Initialize(1L << SegmentBits);
        return device;
    }

    private List<string> WriteSegments(int count, int bytes)
    {
        var files = new List<string>();
        for (var segment = 0; segment < count; segment++)
        {
            var path = $"{_tmp.Sub("kv.log")}.{segment}";
            File.WriteAllBytes(path, new byte[bytes]);
            files.Add(path);
        }

        return files;
    }
}
