using System.Text;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KvStore.Storage.Tests.Wal;

/// <summary>
/// Damage swept across the whole segment of a stopped log, not only at the places the other WAL tests pick: at
/// evenly spaced offsets, a flipped byte, a zeroed run of 16 bytes, or the file cut short (24 offsets each). Whatever the damage, a
/// reopen either refuses with <see cref="WalCorruptException"/> naming the file, or replays an exact prefix of what
/// was synced that lacks only what the damage itself destroyed (a torn tail): never silently fewer entries.
/// </summary>
public sealed class WalDamageSweepTests(ITestOutputHelper output) : IDisposable
{
    private const int Syncs = 8;
    private const int Offsets = 24;
    private readonly TempDir _tmp = new();

    public enum Damage
    {
        FlipByte,
        ZeroSixteenBytes,
        Truncate,
    }

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [InlineData(Damage.FlipByte)]
    [InlineData(Damage.ZeroSixteenBytes)]
    [InlineData(Damage.Truncate)]
    public async Task Damage_anywhere_in_the_segment_is_refused_naming_the_file_or_costs_at_most_what_it_hit(Damage damage)
    {
        // One entry and one hard state per sync, as the node loop writes them; ends[i] = end of sync i+1's data.
        var pristine = _tmp.Sub("pristine");
        var ends = new List<long>();
        await using (var wal = WriteAheadLog.Open(pristine, NullLogger.Instance))
        {
            for (var i = 1; i <= Syncs; i++)
            {
                wal.Append(new WalEntry((ulong)i, 1, 0, Encoding.ASCII.GetBytes(Value(i))));
                wal.Append(new WalHardState(1, 1, (ulong)i));
                await wal.SyncAsync();
                ends.Add(DataEnd(Path.Combine(pristine, "wal.log.0")));
            }
        }

        var dataEnd = ends[^1];
        int refused = 0, intact = 0, tornTail = 0;
        for (var n = 0; n < Offsets; n++)
        {
            var offset = dataEnd * n / Offsets;
            var dir = _tmp.Sub($"case{n}");
            CopyTree(pristine, dir);
            var segment = Path.Combine(dir, "wal.log.0");
            Apply(damage, segment, offset);

            WriteAheadLog wal;
            try
            {
                wal = WriteAheadLog.Open(dir, NullLogger.Instance);
            }
            catch (WalCorruptException e)
            {
                e.FilePath.Should().StartWith(dir, "a refusal names the damaged file ({0} at {1})", damage, offset);
                e.Message.Should().Contain(e.FilePath);
                refused++;
                continue;
            }

            await using (wal)
            {
                var got = wal.Replay().Entries.Select(e => Encoding.ASCII.GetString(e.Data.Span)).ToList();
                got.Should().Equal(Enumerable.Range(1, got.Count).Select(Value), "what replays is an exact prefix ({0} at {1})", damage, offset);

                // Syncs that ended before the damage are kept; only a flip or zeroing in the last sync may lose it.
                var endedBefore = ends.Count(e => e <= offset);
                var mayLoseFrom = damage == Damage.Truncate ? endedBefore : Math.Max(endedBefore, Syncs - 1);
                got.Count.Should().BeGreaterThanOrEqualTo(mayLoseFrom, "{0} at offset {1} (sync ends {2}) must not silently lose synced entries before or after it", damage, offset, string.Join(",", ends));
                if (got.Count == Syncs)
                {
                    intact++;
                }
                else
                {
                    tornTail++;
                }
            }

            Directory.Delete(dir, recursive: true);
        }

        output.WriteLine($"{damage} at {Offsets} offsets in {dataEnd} bytes: {refused} refused naming the file, {tornTail} recovered a torn tail, {intact} replayed everything");
        (refused + tornTail + intact).Should().Be(Offsets);
    }

    private static string Value(int i) => $"value-{i}-" + new string((char)('a' + (i % 26)), 300);

    private static void Apply(Damage damage, string file, long offset)
    {
        using var f = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
        switch (damage)
        {
            case Damage.FlipByte:
                f.Position = offset;
                var b = f.ReadByte();
                f.Position = offset;
                f.WriteByte((byte)(b ^ 0x5A));
                break;
            case Damage.ZeroSixteenBytes:
                f.Position = offset;
                f.Write(new byte[16]);
                break;
            default:
                f.SetLength(offset);
                break;
        }
    }

    private static long DataEnd(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var end = bytes.Length;
        while (end > 0 && bytes[end - 1] == 0)
        {
            end--;
        }

        return end;
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var d in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, d)));
        }

        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
        }
    }
}
