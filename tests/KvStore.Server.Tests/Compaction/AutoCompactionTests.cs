using KvStore.Server.Compaction;
using KvStore.Server.Options;

namespace KvStore.Server.Tests.Compaction;

public sealed class AutoCompactionTests
{
    [Theory]
    [InlineData("periodic", "0", null)]
    [InlineData("revision", "0", null)]
    [InlineData("periodic", "0s", null)]
    [InlineData("periodic", "8", "periodic, keeping 8h0m0s of history")]
    [InlineData("", "1", "periodic, keeping 1h0m0s of history")]
    [InlineData("periodic", "30m", "periodic, keeping 30m0s of history")]
    [InlineData("periodic", "2s", "periodic, keeping 2s of history")]
    [InlineData("revision", "1000", "revision, keeping 1000 revisions")]
    [InlineData("revision", "1us", "revision, keeping 1000 revisions")] // etcd reads a duration's nanoseconds
    public void Flags_parse_as_etcd_parses_them(string mode, string retention, string? expected) =>
        AutoCompactionPolicy.From(mode, retention)?.ToString().Should().Be(expected);

    [Theory]
    [InlineData("foo", "1", "error verifying flags, unknown auto-compaction-mode \"foo\". See 'kvstore --help'.")]
    [InlineData("periodic", "xyz", "error parsing CompactionRetention: time: invalid duration \"xyz\"")]
    [InlineData("periodic", "-1", "error parsing CompactionRetention: time: missing unit in duration \"-1\"")]
    public void Bad_flags_fail_with_etcds_messages(string mode, string retention, string message) =>
        FluentActions.Invoking(() => AutoCompactionPolicy.From(mode, retention)).Should().Throw<OptionsException>().WithMessage(message);

    [Fact]
    public void Periodic_compacts_at_the_revision_of_one_period_ago_then_every_interval()
    {
        var t0 = DateTimeOffset.UnixEpoch;
        long Rev(int second) => 100 + (10 * second);
        var schedule = new PeriodicCompactionSchedule(TimeSpan.FromSeconds(10), t0, Rev(0));
        schedule.RetryInterval.Should().Be(TimeSpan.FromSeconds(1));

        var due = new List<(int Second, long Revision)>();
        for (var s = 1; s <= 30; s++)
        {
            var now = t0 + TimeSpan.FromSeconds(s);
            if (schedule.Tick(now, Rev(s), isLeader: true) is { } rev)
            {
                due.Add((s, rev));
                schedule.Succeeded(now);
            }
        }

        due.Should().Equal((10, Rev(0)), (20, Rev(10)), (30, Rev(20)));
    }

    [Fact]
    public void Periodic_samples_while_follower_and_a_new_leader_compacts_at_once()
    {
        var t0 = DateTimeOffset.UnixEpoch;
        var schedule = new PeriodicCompactionSchedule(TimeSpan.FromSeconds(10), t0, 100);
        for (var s = 1; s < 15; s++)
        {
            schedule.Tick(t0 + TimeSpan.FromSeconds(s), 100 + s, isLeader: false).Should().BeNull();
        }

        schedule.Tick(t0 + TimeSpan.FromSeconds(15), 115, isLeader: true).Should().Be(105);

        // A failed compaction is retried at the next tick.
        schedule.Tick(t0 + TimeSpan.FromSeconds(16), 116, isLeader: true).Should().Be(106);
    }

    [Fact]
    public void Long_periods_retry_every_six_minutes_and_compact_hourly()
    {
        var t0 = DateTimeOffset.UnixEpoch;
        var schedule = new PeriodicCompactionSchedule(TimeSpan.FromHours(8), t0, 1);
        schedule.RetryInterval.Should().Be(TimeSpan.FromMinutes(6));
        var due = new List<TimeSpan>();
        for (var tick = 1; tick <= 120; tick++)
        {
            var now = t0 + (tick * TimeSpan.FromMinutes(6));
            if (schedule.Tick(now, tick, isLeader: true) is not null)
            {
                due.Add(now - t0);
                schedule.Succeeded(now);
            }
        }

        due.Should().Equal(TimeSpan.FromHours(8), TimeSpan.FromHours(9), TimeSpan.FromHours(10), TimeSpan.FromHours(11), TimeSpan.FromHours(12));
    }

    [Fact]
    public void Revision_mode_keeps_the_last_n_revisions()
    {
        var schedule = new RevisionCompactionSchedule(100);
        schedule.Tick(50, isLeader: true).Should().BeNull();
        schedule.Tick(250, isLeader: false).Should().BeNull();
        schedule.Tick(250, isLeader: true).Should().Be(150);
        schedule.Succeeded(150);
        schedule.Tick(250, isLeader: true).Should().BeNull();
        schedule.Tick(300, isLeader: true).Should().Be(200);
    }
}
