using System.Text;
using FASTER.core;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KvStore.Storage.Tests.PowerLoss;

/// <summary>
/// The WAL under simulated power cuts (<see cref="PowerLossDevice"/>): entries appended and synced while the cut
/// comes during a write chosen at random, which with any other write in flight reaches the disk whole, torn at a
/// sector, or not at all.
/// After the cut every entry whose sync completed must be replayed with its data, and nothing may be replayed that
/// was never appended. A tear can only hit the unacknowledged last write, so recovery must never refuse here; the
/// next cut then tears writes made over the repaired tail, and a last clean restart keeps everything. SIGKILL tests cannot see this: the
/// kernel finishes every write a killed process started.
/// </summary>
public sealed class WalPowerLossTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly TempDir _tmp = new();

    public static TheoryData<int> Seeds() => [.. Enumerable.Range(1, 32)];

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Every_synced_entry_survives_a_power_cut_that_drops_or_tears_the_writes_in_flight(int seed)
    {
        var rng = new Random(seed);
        var dir = _tmp.Sub("wal");
        var cuts = 3;
        ulong next = 1;
        var appended = new Dictionary<ulong, string>();
        for (var cut = 0; cut < cuts; cut++)
        {
            PowerLossDevice? wrapped = null;
            var wal = WriteAheadLog.Open(dir, NullLogger.Instance, inner => wrapped = new PowerLossDevice(inner));
            var device = wrapped!;
            var replayed = wal.Replay().Entries;
            next = replayed.Count > 0 ? replayed[^1].Index + 1 : 1;

            // One writer appends batches and syncs until the cut, which falls while a chosen write is in flight: the
            // partial page a sync writes, or the full page an append flushes when it crosses into the next page.
            // Even seeds append entries of up to 300 KB, so that a page of the log (4 MiB) fills every dozen syncs or
            // so and some cuts fall on the write that finishes a page as the appends move on to the next.
            var acked = 0UL;
            var syncs = 0;
            var maxEntry = seed % 2 == 0 ? 300_000 : 3000;
            device.CutPowerAtWrite(rng.Next(3, 40));
            var writer = Task.Run(async () =>
            {
                for (var batch = 0; batch < 10_000 && !device.IsCut; batch++)
                {
                    var last = next;
                    for (var k = rng.Next(1, 4); k > 0; k--)
                    {
                        var data = $"{seed}/{cut}/{next}/" + new string((char)('a' + (int)(next % 26)), rng.Next(10, maxEntry));
                        appended[next] = data;
                        wal.Append(new WalEntry(next, (ulong)cut + 1, 0, Encoding.ASCII.GetBytes(data)));
                        last = next++;
                    }

                    wal.Append(new WalHardState((ulong)cut + 1, 1, last));
                    try
                    {
                        await wal.SyncAsync().AsTask().WaitAsync(Bound);
                    }
                    catch (Exception e) when (device.IsCut && e is not TimeoutException)
                    {
                        return; // the sync that was running at the cut fails: not acknowledged
                    }

                    Volatile.Write(ref acked, last);
                    Interlocked.Increment(ref syncs);
                }
            });

            await writer.WaitAsync(Bound);
            device.IsCut.Should().BeTrue("the writer stops only at the cut (seed {0}, cut {1})", seed, cut);
            var ackedAtCut = Volatile.Read(ref acked);
            try
            {
                await wal.DisposeAsync().AsTask().WaitAsync(Bound);
            }
            catch (CommitFailureException)
            {
                // Closing commits once more, which the powered-off device refuses; the log is closed all the same.
            }
            var changed = await device.ApplyLossAsync(rng, Bound);
            var (_, offset, length) = device.WriteAtCut!.Value;
            var endsPage = (offset + length) % (1UL << WriteAheadLog.PageSizeBits) == 0;
            output.WriteLine($"cut {cut}: {syncs} syncs acknowledged up to entry {ackedAtCut}; the write cut: {length} bytes at offset {offset}{(endsPage ? ", the end of a page" : "")}; {changed} sectors rolled back");

            // Restart from what reached the disk: a tear confined to the unacknowledged last write is repaired, never
            // refused, and the next cut then tears writes made over the repaired tail.
            await using (var reopened = WriteAheadLog.Open(dir, NullLogger.Instance))
            {
                CheckReplay(reopened, appended, (int)ackedAtCut, $"seed {seed}, cut {cut}");
                reopened.Replay().HardState!.Value.Commit.Should().BeGreaterThanOrEqualTo(ackedAtCut);
            }
        }

        // After the last repair: appends over the repaired tail, a clean stop, and one more start keep everything.
        int expected;
        await using (var wal = WriteAheadLog.Open(dir, NullLogger.Instance))
        {
            var entries = wal.Replay().Entries;
            next = entries.Count > 0 ? entries[^1].Index + 1 : 1;
            for (var k = 0; k < 5; k++, next++)
            {
                appended[next] = $"{seed}/final/{next}";
                wal.Append(new WalEntry(next, (ulong)cuts + 1, 0, Encoding.ASCII.GetBytes(appended[next])));
            }

            await wal.SyncAsync().AsTask().WaitAsync(Bound);
            expected = (int)next - 1;
        }

        await using (var final = WriteAheadLog.Open(dir, NullLogger.Instance))
        {
            CheckReplay(final, appended, expected, $"seed {seed}, after the last repair");
            final.Replay().Entries.Should().HaveCount(expected);
        }
    }

    private static void CheckReplay(WriteAheadLog wal, Dictionary<ulong, string> appended, int atLeast, string when)
    {
        var entries = wal.Replay().Entries;
        entries.Select(e => e.Index).Should().Equal(Enumerable.Range(1, entries.Count).Select(i => (ulong)i), "entries replay in order without gaps ({0})", when);
        entries.Count.Should().BeGreaterThanOrEqualTo(atLeast, "every entry whose sync completed survives the power cut ({0})", when);
        foreach (var e in entries)
        {
            Encoding.ASCII.GetString(e.Data.Span).Should().Be(appended[e.Index], "entry {0} replays with the data appended ({1})", e.Index, when);
        }
    }
}
