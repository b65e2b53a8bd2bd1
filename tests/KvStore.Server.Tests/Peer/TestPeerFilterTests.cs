using KvStore.Server.Peer;

namespace KvStore.Server.Tests.Peer;

/// <summary>
/// The fault tests' peer filter: a partition written to the file must take effect on the next message (the first
/// read once used a sentinel time whose subtraction overflowed, so the file was never read and no partition of the
/// randomized fault test ever cut anything), and later changes within <see cref="TestPeerFilter.RecheckInterval"/>.
/// </summary>
public sealed class TestPeerFilterTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvstore-peer-filter-").FullName;
    private TimeSpan _now = TimeSpan.FromDays(3);

    private string File => Path.Combine(_dir, "drop");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_partition_in_the_file_before_the_first_message_drops_that_message()
    {
        System.IO.File.WriteAllText(File, "a1b2\n");
        var filter = new TestPeerFilter(File, () => _now);

        filter.DropsFrom(0xa1b2).Should().BeTrue();
        filter.DropsFrom(0xa1b3).Should().BeFalse();
    }

    [Fact]
    public void The_first_read_happens_at_any_clock_value()
    {
        System.IO.File.WriteAllText(File, "7\n");
        foreach (var start in new[] { TimeSpan.Zero, TimeSpan.FromTicks(1), TimeSpan.MaxValue, TimeSpan.MinValue + TimeSpan.FromDays(1) })
        {
            new TestPeerFilter(File, () => start).DropsFrom(7).Should().BeTrue("the file is read on the first message (clock at {0})", start);
        }
    }

    [Fact]
    public void Changes_take_effect_once_the_recheck_interval_has_passed()
    {
        var filter = new TestPeerFilter(File, () => _now);
        filter.DropsFrom(5).Should().BeFalse("a missing file drops nothing");

        System.IO.File.WriteAllText(File, "5\nff\n");
        _now += TestPeerFilter.RecheckInterval - TimeSpan.FromMilliseconds(1);
        filter.DropsFrom(5).Should().BeFalse("the last read is still fresh");

        _now += TimeSpan.FromMilliseconds(1);
        filter.DropsFrom(5).Should().BeTrue();
        filter.DropsFrom(0xff).Should().BeTrue();

        System.IO.File.WriteAllText(File, "\n");
        _now += TestPeerFilter.RecheckInterval;
        filter.DropsFrom(5).Should().BeFalse("the partition was healed");
        filter.DropsFrom(0xff).Should().BeFalse();
    }

    [Fact]
    public void Lines_that_are_not_hex_ids_are_ignored_and_a_deleted_file_heals()
    {
        System.IO.File.WriteAllText(File, "  c \nnot-an-id\n\n10\n");
        var filter = new TestPeerFilter(File, () => _now);
        filter.DropsFrom(0xc).Should().BeTrue();
        filter.DropsFrom(0x10).Should().BeTrue();

        System.IO.File.Delete(File);
        _now += TestPeerFilter.RecheckInterval;
        filter.DropsFrom(0xc).Should().BeFalse();
    }
}
