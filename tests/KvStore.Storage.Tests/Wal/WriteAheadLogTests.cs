using System.Text;
using FASTER.core;
using KvStore.Storage.Backend;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Wal;

public sealed class WriteAheadLogTests : IDisposable
{
    private readonly TempDir _tmp = new();

    private string WalDir => _tmp.Sub("wal");

    public void Dispose() => _tmp.Dispose();

    private static WalEntry Entry(ulong index, ulong term, string data) => new(index, term, 0, Encoding.ASCII.GetBytes(data));

    private static string[] Describe(WalReplay replay) =>
        replay.Entries.Select(e => $"{e.Index}/{e.Term}:{Encoding.ASCII.GetString(e.Data.Span)}").ToArray();

    private WalReplay Reopen()
    {
        using var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance);
        return wal.Replay();
    }

    private async Task WriteAsync(params object[] records)
    {
        await using var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance);
        foreach (var r in records)
        {
            switch (r)
            {
                case WalEntry e:
                    wal.Append(e);
                    break;
                case WalHardState h:
                    wal.Append(h);
                    break;
                case WalSnapshotMarker s:
                    wal.Append(s);
                    break;
                default:
                    throw new ArgumentException("unknown record");
            }
        }

        await wal.SyncAsync();
    }

    [Fact]
    public async Task Entries_and_hard_state_survive_reopen()
    {
        await WriteAsync(Entry(1, 1, "a"), Entry(2, 1, "b"), new WalHardState(1, 7, 2), Entry(3, 1, "c"));

        var replay = Reopen();

        Describe(replay).Should().Equal("1/1:a", "2/1:b", "3/1:c");
        replay.HardState.Should().Be(new WalHardState(1, 7, 2));
        replay.Snapshot.Should().BeNull();
    }

    [Fact]
    public async Task The_log_holds_every_entry_until_its_first_snapshot_marker()
    {
        Reopen().HoldsEveryEntry.Should().BeFalse("an empty log holds no entry to replay a store's writes from");
        await WriteAsync(Entry(1, 1, "a"), Entry(2, 1, "b"));
        Reopen().HoldsEveryEntry.Should().BeTrue();
        await WriteAsync(new WalSnapshotMarker(1, 1));
        Reopen().HoldsEveryEntry.Should().BeFalse("entries before the marker may be gone");
    }

    [Fact]
    public async Task A_log_that_starts_after_entry_1_does_not_hold_every_entry()
    {
        await WriteAsync(Entry(5, 2, "a"), Entry(6, 2, "b"));
        Reopen().HoldsEveryEntry.Should().BeFalse();
    }

    public static TheoryData<string, string[]> ReplayCases => new()
    {
        // record script: "e<index>/<term>:<data>", "s<index>/<term>" (snapshot marker); expected entries
        { "e1/1:a e2/1:b e3/1:c e2/2:x", ["1/1:a", "2/2:x"] },
        { "e1/1:a e2/1:b e3/1:c e4/1:d e3/2:x e4/2:y", ["1/1:a", "2/1:b", "3/2:x", "4/2:y"] },
        { "e1/1:a e2/1:b e3/1:c s2/1", ["3/1:c"] },
        { "e1/1:a s1/1 e2/1:b e1/2:z", [] },
        { "e5/3:a e6/3:b e5/4:c e6/4:d e7/4:e", ["5/4:c", "6/4:d", "7/4:e"] },
    };

    [Theory]
    [MemberData(nameof(ReplayCases))]
    public async Task Replay_later_entry_discards_earlier_entries_at_same_or_higher_index(string script, string[] expected)
    {
        var records = script.Split(' ').Select(Parse).ToArray();
        await WriteAsync(records);

        Describe(Reopen()).Should().Equal(expected);

        static object Parse(string token)
        {
            var parts = token[1..].Split(':');
            var it = parts[0].Split('/').Select(ulong.Parse).ToArray();
            return token[0] == 'e' ? Entry(it[0], it[1], parts[1]) : new WalSnapshotMarker(it[0], it[1]);
        }
    }

    [Fact]
    public async Task After_a_failed_write_every_later_sync_fails_instead_of_waiting()
    {
        // FasterLog never counts anything past a failed write as flushed, so no later commit can complete: each later
        // sync must fail, although its own write would reach the disk, rather than wait for a commit that never comes.
        FailingWriteDevice? device = null;
        var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance, inner => device = new FailingWriteDevice(inner));
        try
        {
            wal.Append(Entry(1, 1, "v1"));
            await wal.SyncAsync();

            device!.FailNext();
            wal.Append(Entry(2, 1, "v2"));
            var failed = () => wal.SyncAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            await failed.Should().ThrowAsync<CommitFailureException>("the failed write fails its sync");

            for (var i = 3; i <= 5; i++)
            {
                wal.Append(Entry((ulong)i, 1, $"v{i}"));
                var later = () => wal.SyncAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                await later.Should().ThrowAsync<CommitFailureException>("sync {0} comes after a write the log lost", i);
            }
        }
        finally
        {
            // Closing commits once more, which fails the same way; the log is closed all the same.
            var close = () => wal.DisposeAsync().AsTask();
            await close.Should().ThrowAsync<CommitFailureException>();
        }
    }

    [Fact]
    public async Task Concurrent_sync_callers_share_commits()
    {
        // The first commit's write is held until every other caller has appended and is waiting: they all arrive
        // while a commit runs, so they share the next one instead of writing one each.
        HeldWriteDevice? device = null;
        await using var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance, inner => device = new HeldWriteDevice(inner));
        device!.Hold();
        wal.Append(Entry(1, 1, "v1"));
        var first = Task.Run(() => wal.SyncAsync().AsTask());
        (await device.Held.WaitAsync(TimeSpan.FromSeconds(30))).Should().BeTrue("the first commit's write reaches the device");

        var others = new List<Task>();
        try
        {
            for (var i = 2; i <= 200; i++)
            {
                wal.Append(Entry((ulong)i, 1, $"v{i}"));
                others.Add(wal.SyncAsync().AsTask());
            }

            others.Should().OnlyContain(t => !t.IsCompleted, "no commit can finish while the first one's write is held");
        }
        finally
        {
            device.Release();
        }

        await Task.WhenAll(others.Append(first)).WaitAsync(TimeSpan.FromSeconds(30));

        wal.CommitRounds.Should().BeInRange(2, 3, "199 callers that arrived during one commit share the next");
        await wal.DisposeAsync();
        Reopen().Entries.Should().HaveCount(200);
    }

    [Fact]
    public async Task Sync_with_nothing_appended_returns()
    {
        await using var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance);
        await wal.SyncAsync();
        wal.Append(Entry(1, 1, "a"));
        await wal.SyncAsync();
        await wal.SyncAsync();
    }

    [Fact]
    public async Task Truncated_last_record_is_repaired_on_open()
    {
        await WriteAsync(Entry(1, 1, "first-record"), Entry(2, 1, "second-record"), Entry(3, 1, "third-record-with-some-length"));
        var file = SegmentFile();
        var bytes = File.ReadAllBytes(file);
        var at = IndexOf(bytes, "third-record");
        using (var fs = new FileStream(file, FileMode.Open))
        {
            fs.SetLength(at + 5);
        }

        Describe(Reopen()).Should().Equal("1/1:first-record", "2/1:second-record");

        // The repaired log accepts appends and replays cleanly afterwards.
        await WriteAsync(Entry(3, 1, "again"));
        Describe(Reopen()).Should().Equal("1/1:first-record", "2/1:second-record", "3/1:again");
    }

    [Fact]
    public async Task Torn_last_record_is_treated_as_torn_tail()
    {
        await WriteAsync(Entry(1, 1, "first-record"), Entry(2, 1, "second-record"));

        // A sector of the last write that never reached the disk: zeros from the record's header to the sector's end.
        var header = IndexOf(File.ReadAllBytes(SegmentFile()), "second-record") - WalRecordCodec.EntryHeaderSize - 4;
        ZeroToSectorEnd(header);

        Describe(Reopen()).Should().Equal("1/1:first-record");
        await WriteAsync(Entry(2, 2, "fresh"));
        Describe(Reopen()).Should().Equal("1/1:first-record", "2/2:fresh");
    }

    [Fact]
    public async Task Flipped_byte_in_the_last_synced_record_is_refused_not_dropped()
    {
        // A flip is no tear (a disk writes whole sectors): the commit after the record was acknowledged.
        await WriteAsync(Entry(1, 1, "first-record"), Entry(2, 1, "second-record"));
        FlipByte(IndexOf(File.ReadAllBytes(SegmentFile()), "second-record") + 2);

        var open = () => WriteAheadLog.Open(WalDir, NullLogger.Instance);
        open.Should().Throw<WalCorruptException>().Which.FilePath.Should().Be(SegmentFile());
    }

    [Fact]
    public async Task Garbage_after_last_committed_record_is_ignored()
    {
        await WriteAsync(Entry(1, 1, "first-record"), Entry(2, 1, "second-record"));
        using (var fs = new FileStream(SegmentFile(), FileMode.Open))
        {
            // Right after the data, in the space allocated ahead of it.
            fs.Position = DataEnd();
            var garbage = new byte[3000];
            new Random(42).NextBytes(garbage);
            fs.Write(garbage);
        }

        Describe(Reopen()).Should().Equal("1/1:first-record", "2/1:second-record");
        await WriteAsync(Entry(3, 1, "third"));
        Describe(Reopen()).Should().Equal("1/1:first-record", "2/1:second-record", "3/1:third");
    }

    [Fact]
    public async Task Segment_files_are_allocated_a_step_ahead_of_the_commits()
    {
        const long step = WalSegmentDevice.PreallocationStep;
        var index = 0UL;
        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            wal.Append(Entry(++index, 1, "first"));
            await wal.SyncAsync();
            new FileInfo(SegmentFile()).Length.Should().Be(step, "the first commit allocates a step, not just its own bytes");
            DataEnd().Should().BeLessThan(4096);

            // Commits past the allocated space allocate the next step.
            var value = new string('v', 60_000);
            while (DataEnd() <= step)
            {
                wal.Append(Entry(++index, 1, value));
                await wal.SyncAsync();
            }

            new FileInfo(SegmentFile()).Length.Should().Be(2 * step);
        }

        // The zeros past the data read as the end of the log.
        var replay = Reopen();
        replay.Entries.Should().HaveCount((int)index);
        replay.Entries[^1].Index.Should().Be(index);
    }

    [Fact]
    public async Task Corrupt_record_in_the_middle_fails_open_naming_file_and_offset()
    {
        await WriteAsync(Entry(1, 1, "first-record"), Entry(2, 1, "middle-record"), Entry(3, 1, "last-record"));
        var file = SegmentFile();
        var at = IndexOf(File.ReadAllBytes(file), "middle-record");
        FlipByte(at + 3);

        var open = () => WriteAheadLog.Open(WalDir, NullLogger.Instance);

        var error = open.Should().Throw<WalCorruptException>().Which;
        error.FilePath.Should().Be(file);
        error.FileOffset.Should().BeInRange(at - 64, at);
        error.Message.Should().Contain(file).And.Contain($"offset {error.FileOffset}");
    }

    [Fact]
    public async Task Release_before_keeps_later_entries_hard_state_and_snapshot()
    {
        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            wal.Append(new WalHardState(2, 1, 1));
            for (ulong i = 1; i <= 10; i++)
            {
                wal.Append(Entry(i, 2, $"e{i}"));
            }

            wal.Append(new WalSnapshotMarker(4, 2));
            await wal.SyncAsync();
            wal.ReleaseBefore(5);
            wal.Append(Entry(11, 2, "e11"));
            await wal.SyncAsync();
        }

        var replay = Reopen();
        replay.Entries.Select(e => e.Index).Should().Equal(5, 6, 7, 8, 9, 10, 11);
        replay.HardState.Should().Be(new WalHardState(2, 1, 1));
        replay.Snapshot.Should().Be(new WalSnapshotMarker(4, 2));
    }

    [Fact]
    public async Task Snapshot_marker_v2_carries_membership_and_old_markers_still_read()
    {
        var withConf = new WalSnapshotMarker(3, 2) { Voters = [1, 2, 3], Learners = [9] };
        await WriteAsync(Entry(1, 1, "a"), new WalSnapshotMarker(1, 1), Entry(2, 1, "b"), Entry(3, 2, "c"), withConf, Entry(4, 2, "d"));
        var replay = Reopen();
        replay.Snapshot.Should().Be(withConf);
        replay.Snapshot!.Value.Voters.Should().Equal(1UL, 2UL, 3UL);
        replay.Snapshot!.Value.Learners.Should().Equal(9UL);
        Describe(replay).Should().Equal("4/2:d");

        // A marker without membership is still written in the original 21-byte kind-3 format.
        var bytes = File.ReadAllBytes(SegmentFile());
        WalRecordCodec.SnapshotRecordSize(new WalSnapshotMarker(1, 1)).Should().Be(21);
        WalRecordCodec.SnapshotRecordSize(withConf).Should().Be(21 + 1 + 4 + 24 + 4 + 8);
        bytes.Length.Should().BeGreaterThan(0);
    }

    [Fact]
    public async Task Replacing_marker_drops_the_whole_earlier_log_and_release_keeps_later_entries()
    {
        var install = new WalSnapshotMarker(5, 3) { Voters = [1], ReplacesLog = true };
        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            // An old local log shorter than the snapshot (a conflicting suffix past it is covered in RaftLogStoreTests).
            for (ulong i = 1; i <= 3; i++)
            {
                wal.Append(Entry(i, 1, $"old{i}"));
            }

            wal.Append(new WalSnapshotMarker(2, 1));
            wal.Append(install);
            wal.Append(Entry(6, 3, "new6"));
            await wal.SyncAsync();
        }

        Describe(Reopen()).Should().Equal("6/3:new6");
        Reopen().Snapshot.Should().Be(install);

        await using (var wal = WriteAheadLog.Open(WalDir, NullLogger.Instance))
        {
            // The first entry >= 6 is new6, after the marker: the marker is cut, re-appended after new6 and must not drop it.
            wal.ReleaseBefore(6);
            wal.Append(Entry(7, 3, "new7"));
            await wal.SyncAsync();
        }

        var replay = Reopen();
        Describe(replay).Should().Equal("6/3:new6", "7/3:new7");
        replay.Snapshot!.Value.Index.Should().Be(5);
        replay.Snapshot!.Value.Voters.Should().Equal(1UL);
        replay.Snapshot!.Value.ReplacesLog.Should().BeFalse();
    }

    private string SegmentFile() => Path.Combine(WalDir, "wal.log.0");

    /// <summary>Offset just past the segment file's last non-zero byte.</summary>
    private long DataEnd()
    {
        var bytes = File.ReadAllBytes(SegmentFile());
        return Array.FindLastIndex(bytes, b => b != 0) + 1;
    }

    private void ZeroToSectorEnd(long offset)
    {
        using var fs = new FileStream(SegmentFile(), FileMode.Open);
        fs.Position = offset;
        fs.Write(new byte[(int)(((offset | 511) + 1) - offset)]);
    }

    private void FlipByte(long offset)
    {
        using var fs = new FileStream(SegmentFile(), FileMode.Open);
        fs.Position = offset;
        var b = fs.ReadByte();
        fs.Position = offset;
        fs.WriteByte((byte)(b ^ 0x5A));
    }

    private static int IndexOf(byte[] haystack, string needle)
    {
        var at = haystack.AsSpan().IndexOf(Encoding.ASCII.GetBytes(needle));
        at.Should().BeGreaterThanOrEqualTo(0, $"'{needle}' should be in the segment file");
        return at;
    }

    /// <summary>Passes I/O through, except that the first write after <see cref="Hold"/> waits (on the writer's thread) until released.</summary>
    /// <summary>Fails the next write it is told to (EIO, nothing written), passes every other one.</summary>
    private sealed class FailingWriteDevice(IDevice inner) : ForwardingDevice(inner)
    {
        private int _failNext;

        public void FailNext() => Volatile.Write(ref _failNext, 1);

        public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
        {
            if (Interlocked.Exchange(ref _failNext, 0) == 1)
            {
                callback(5, 0, context);
                return;
            }

            Inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);
        }
    }

    private sealed class HeldWriteDevice(IDevice inner) : ForwardingDevice(inner)
    {
        private readonly ManualResetEventSlim _released = new(initialState: true);
        private int _holdNext;

        public SemaphoreSlim Held { get; } = new(0);

        public void Hold()
        {
            _released.Reset();
            Volatile.Write(ref _holdNext, 1);
        }

        public void Release() => _released.Set();

        public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
        {
            if (Interlocked.Exchange(ref _holdNext, 0) == 1)
            {
                Held.Release();
                _released.Wait(TimeSpan.FromSeconds(60));
            }

            Inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);
        }

        protected override void OnDisposing() => _released.Dispose();
    }
}
