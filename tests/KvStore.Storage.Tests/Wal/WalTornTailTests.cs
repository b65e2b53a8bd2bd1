using System.Text;
using KvStore.Storage.Wal;
using KvStore.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Wal;

/// <summary>
/// The end-to-end torn-tail case (WalFaultTests): a process killed after several group commits, then the last bytes
/// of the newest segment cut off. In fast-commit mode every sync ends with a FasterLog commit record, so a short cut
/// lands in the last commit record and a longer one in the last data record(s).
/// </summary>
public sealed class WalTornTailTests : IDisposable
{
    private const int Syncs = 12;
    private readonly TempDir _tmp = new();

    private string WalDir => _tmp.Sub("wal");

    private string SegmentFile => Path.Combine(WalDir, "wal.log.0");

    public void Dispose() => _tmp.Dispose();

    private static WalEntry Entry(ulong index, string data) => new(index, 1, 0, Encoding.ASCII.GetBytes(data));

    private static string Value(int i) => $"value-{i}-" + new string((char)('a' + (i % 26)), 40);

    /// <summary>One entry and one hard state per sync, as the raft node loop writes them; returns data end per sync.</summary>
    private async Task<List<long>> WriteSyncedAsync(int syncs)
    {
        var ends = new List<long>();
        await using var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance);
        for (var i = 1; i <= syncs; i++)
        {
            wal.Append(Entry((ulong)i, Value(i)));
            wal.Append(new WalHardState(1, 1, (ulong)i));
            await wal.SyncAsync();
            ends.Add(DataEnd(SegmentFile));
        }

        return ends;
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

    private void CutTail(long newLength)
    {
        using var f = new FileStream(SegmentFile, FileMode.Open, FileAccess.Write);
        f.SetLength(newLength);
    }

    private static List<string> ReplayedData(WalReplay replay) =>
        replay.Entries.Select(e => $"{e.Index}:{Encoding.ASCII.GetString(e.Data.Span)}").ToList();

    private static List<string> Expected(int count) =>
        Enumerable.Range(1, count).Select(i => $"{i}:{Value(i)}").ToList();

    public static TheoryData<int> Cuts => new() { 1, 2, 3, 4, 5, 8, 12, 16, 20, 24, 31, 32, 40, 47, 48, 49, 52, 60, 64, 80, 100, 120, 150, 200 };

    [Theory]
    [MemberData(nameof(Cuts))]
    public async Task Cutting_the_last_bytes_keeps_every_earlier_sync_and_appends_continue(int cut)
    {
        var ends = await WriteSyncedAsync(Syncs);
        var end = DataEnd(SegmentFile);
        CutTail(end - cut);

        var logger = new ListLogger();
        int kept;
        await using (var wal = WriteAheadLog.Open(WalDir, logger))
        {
            var replay = wal.Replay();
            var got = ReplayedData(replay);
            kept = got.Count;

            // Only the last sync can be lost, and what is kept is an exact prefix.
            kept.Should().BeOneOf(Syncs - 1, Syncs);
            got.Should().Equal(Expected(kept));
            replay.HardState.Should().NotBeNull();
            replay.HardState!.Value.Commit.Should().BeInRange((ulong)Syncs - 1, (ulong)Syncs);
            replay.HardState!.Value.Commit.Should().BeLessThanOrEqualTo((ulong)kept);
            logger.Warnings.Should().ContainSingle(w => w.Contains("wal.log.0"), "the repair names the file");

            wal.Append(Entry((ulong)kept + 1, "after-repair"));
            wal.Append(new WalHardState(1, 1, (ulong)kept + 1));
            await wal.SyncAsync();
        }

        ends.Count.Should().Be(Syncs);
        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            var got = ReplayedData(wal.Replay());
            got.Should().Equal([.. Expected(kept), $"{kept + 1}:after-repair"]);
            wal.Replay().HardState!.Value.Commit.Should().Be((ulong)kept + 1);
            wal.Append(Entry((ulong)kept + 2, "second-session"));
            await wal.SyncAsync();
        }

        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            ReplayedData(wal.Replay()).Should().Equal([.. Expected(kept), $"{kept + 1}:after-repair", $"{kept + 2}:second-session"]);
        }
    }

    [Fact]
    public async Task Every_cut_into_the_last_sync_recovers_a_prefix()
    {
        var ends = await WriteSyncedAsync(Syncs);
        var image = _tmp.Sub("image");
        CrashImage.Copy(WalDir, image);
        var last = ends[^1];
        var previous = ends[^2];
        for (var length = last - 1; length >= previous - 8; length--)
        {
            Directory.Delete(WalDir, recursive: true);
            CrashImage.Copy(image, WalDir);
            CutTail(length);
            await using var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance);
            var got = ReplayedData(wal.Replay());
            got.Count.Should().BeInRange(Syncs - 2, Syncs, "cut to {0} bytes (last sync ended at {1}, previous at {2})", length, last, previous);
            got.Should().Equal(Expected(got.Count));
            wal.Append(Entry((ulong)got.Count + 1, "after"));
            await wal.SyncAsync();
        }
    }

    [Fact]
    public async Task Bad_record_followed_by_valid_synced_records_still_fails_naming_file_and_offset()
    {
        await WriteSyncedAsync(Syncs);
        var bytes = File.ReadAllBytes(SegmentFile);
        var at = bytes.AsSpan().IndexOf(Encoding.ASCII.GetBytes(Value(5)));
        at.Should().BePositive();
        using (var f = new FileStream(SegmentFile, FileMode.Open, FileAccess.Write))
        {
            f.Position = at + 10;
            f.WriteByte((byte)(bytes[at + 10] ^ 0xFF));
        }

        var open = () => WriteAheadLog.Open(WalDir, NullLogger.Instance);
        var error = open.Should().Throw<WalCorruptException>().Which;
        error.FilePath.Should().Be(SegmentFile);
        error.FileOffset.Should().BeInRange(at - 64, at);
        error.Message.Should().Contain("wal.log.0").And.Contain($"offset {error.FileOffset}");
    }

    [Fact]
    public async Task An_undamaged_log_opens_without_repair_including_one_spanning_several_pages()
    {
        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            // 4 MiB pages: about 10 MiB of entries crosses two page boundaries, with a sync every 40 entries.
            var data = new string('x', 16 * 1024);
            for (var i = 1; i <= 640; i++)
            {
                wal.Append(Entry((ulong)i, $"{i}:{data}"));
                if (i % 40 == 0)
                {
                    await wal.SyncAsync();
                }
            }
        }

        for (var round = 0; round < 2; round++)
        {
            var logger = new ListLogger();
            await using var wal = WriteAheadLog.Open(WalDir, logger);
            wal.Replay().Entries.Should().HaveCount(640);
            logger.Warnings.Should().BeEmpty();
        }

        // A torn tail in the last page of a multi-page log is repaired the same way.
        CutTail(DataEnd(SegmentFile) - 5);
        var repairLog = new ListLogger();
        await using (var wal = WriteAheadLog.Open(WalDir, repairLog))
        {
            wal.Replay().Entries.Count.Should().BeInRange(639, 640);
            repairLog.Warnings.Should().ContainSingle();
        }
    }

    [Fact]
    public async Task Damaged_framing_in_the_middle_still_fails_naming_file_and_offset()
    {
        var ends = await WriteSyncedAsync(Syncs);
        var bytes = File.ReadAllBytes(SegmentFile);
        var at = bytes.AsSpan().IndexOf(Encoding.ASCII.GetBytes(Value(4)));

        // The FasterLog length header of the entry record holding value 4 (i32 length, u32 crc, kind, index, term, type).
        var header = at - WalRecordCodec.EntryHeaderSize - 4;
        using (var f = new FileStream(SegmentFile, FileMode.Open, FileAccess.Write))
        {
            f.Position = header + 2;
            f.WriteByte(0x7F);
        }

        var open = () => WriteAheadLog.Open(WalDir, NullLogger.Instance);
        var error = open.Should().Throw<WalCorruptException>().Which;
        error.FilePath.Should().Be(SegmentFile);
        error.FileOffset.Should().Be(header);
        ends.Should().HaveCount(Syncs);
    }

    [Fact]
    public async Task Damaged_commit_record_in_the_middle_fails()
    {
        var ends = await WriteSyncedAsync(Syncs);

        // The commit record of sync 3 ends at ends[2]; damage its begin address field.
        var commitStart = ends[2] - 48;
        using (var f = new FileStream(SegmentFile, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = commitStart + 4 + 4 + 8;
            var b = f.ReadByte();
            f.Position = commitStart + 4 + 4 + 8;
            f.WriteByte((byte)(b ^ 0x10));
        }

        var open = () => WriteAheadLog.Open(WalDir, NullLogger.Instance);
        open.Should().Throw<WalCorruptException>().Which.FileOffset.Should().Be(commitStart);
    }

    private sealed class ListLogger : ILogger
    {
        public List<string> Warnings { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Warning)
            {
                Warnings.Add(formatter(state, exception));
            }
        }
    }
}
