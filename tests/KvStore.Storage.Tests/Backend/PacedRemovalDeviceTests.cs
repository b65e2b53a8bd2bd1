using System.Diagnostics;
using FASTER.core;
using FluentAssertions;
using KvStore.Storage.Backend;

namespace KvStore.Storage.Tests.Backend;

/// <summary>
/// Obsolete segment files leave the log's names at once, then go a step at a time, in order, and all of them before
/// the device closes; a crash's leftovers go when the device opens.
/// </summary>
public sealed class PacedRemovalDeviceTests : IDisposable
{
    private const int SegmentBits = 16;
    private const int Step = 4096;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task Renames_each_segment_then_shrinks_it_in_paced_steps_before_deleting_it()
    {
        var pause = TimeSpan.FromMilliseconds(200);
        using var device = Open(pause);
        var files = WriteSegments(2, 4 * Step);
        var removed = new List<int>();
        var firstRemoved = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = Stopwatch.StartNew();

        device.RemoveSegmentAsync(0, _ => { Record(removed, 0); firstRemoved.SetResult(); }, null!);
        device.RemoveSegmentAsync(1, _ => Record(removed, 1), null!);

        // FASTER hears of the removal once the segment's name is gone; its bytes are still being given back.
        await firstRemoved.Task.WaitAsync(TimeSpan.FromSeconds(30));
        File.Exists(files[0]).Should().BeFalse();
        var leaving = files[0] + PacedRemovalDevice.RemovedSuffix;
        File.Exists(leaving).Should().BeTrue("the renamed file is shrunk in paced steps before it is deleted");

        await WaitUntilAsync(() => files.All(f => !File.Exists(f) && !File.Exists(f + PacedRemovalDevice.RemovedSuffix)));
        removed.Should().Equal(0, 1);
        // Each 16 KiB file shrinks to 12, 8 and 4 KiB with a pause after each step before it is deleted.
        clock.Elapsed.Should().BeGreaterThanOrEqualTo(6 * pause);
    }

    [Fact]
    public void Dispose_finishes_pending_removals_without_waiting_out_the_pauses()
    {
        var device = Open(TimeSpan.FromMinutes(10));
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
        Directory.EnumerateFiles(_tmp.Path).Should().BeEmpty();
    }

    [Fact]
    public void Opening_deletes_what_a_crash_left_half_removed_and_keeps_the_segments()
    {
        var files = WriteSegments(2, Step);
        var leftover = $"{_tmp.Sub("kv.log")}.7{PacedRemovalDevice.RemovedSuffix}";
        File.WriteAllBytes(leftover, new byte[Step]);

        using var device = Open(TimeSpan.FromMilliseconds(1));

        File.Exists(leftover).Should().BeFalse();
        files.Should().OnlyContain(f => File.Exists(f));
    }

    private static void Record(List<int> removed, int segment)
    {
        lock (removed)
        {
            removed.Add(segment);
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            deadline.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(30));
            await Task.Delay(10);
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
