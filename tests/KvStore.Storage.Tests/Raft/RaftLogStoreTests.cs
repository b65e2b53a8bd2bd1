using System.Runtime.InteropServices;
using KvStore.Raft;
using KvStore.Raft.Storage;
using KvStore.Storage.Raft;
using KvStore.Storage.Wal;
using KvStore.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Raft;

public sealed class RaftLogStoreTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private WriteAheadLog _wal;
    private RaftLogStore _store;

    public RaftLogStoreTests()
    {
        _wal = WriteAheadLog.Open(_tmp.Sub("wal"), NullLogger.Instance);
        _store = RaftLogStore.Open(_wal, NullLogger.Instance);
    }

    public void Dispose()
    {
        _wal.Dispose();
        _tmp.Dispose();
    }

    private static Entry E(ulong index, ulong term, int size = 8, EntryType type = EntryType.Normal) =>
        new() { Index = index, Term = term, Type = type, Data = Enumerable.Repeat((byte)index, size).ToArray() };

    private static List<Entry> Range(ulong from, ulong to, ulong term) =>
        [.. Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => E((ulong)i, term))];

    /// <summary>Entries 1..10 at term 1, snapshot at 5 (voters 1,2,3), compacted through 5.</summary>
    private async Task SnapshotAndCompactAt5()
    {
        _store.Save(new HardState(1, 1, 10), Range(1, 10, 1), null);
        _store.CreateSnapshot(5, new ConfState { Voters = [1, 2, 3] });
        await _store.SyncAsync();
        _store.Compact(5);
    }

    private async Task Reopen(bool sync = true)
    {
        if (sync)
        {
            await _store.SyncAsync();
        }

        _wal.Dispose();
        _wal = WriteAheadLog.Open(_tmp.Sub("wal"), NullLogger.Instance);
        _store = RaftLogStore.Open(_wal, NullLogger.Instance);
    }

    private static ulong[] Indexes(RaftLogStore s, ulong lo, ulong hi)
    {
        s.Entries(lo, hi, ulong.MaxValue, out var ents).Should().Be(StorageStatus.Ok);
        return [.. ents.Select(e => e.Index)];
    }

    [Theory]
    [InlineData(1UL, 3UL, StorageStatus.Compacted)]
    [InlineData(5UL, 6UL, StorageStatus.Compacted)]
    [InlineData(6UL, 8UL, StorageStatus.Ok)]
    [InlineData(6UL, 11UL, StorageStatus.Ok)]
    [InlineData(6UL, 12UL, StorageStatus.Unavailable)]
    public async Task Entries_report_compacted_and_unavailable_ranges_before_and_after_reopen(ulong lo, ulong hi, StorageStatus want)
    {
        await SnapshotAndCompactAt5();
        for (var pass = 0; pass < 2; pass++)
        {
            _store.Entries(lo, hi, ulong.MaxValue, out var ents).Should().Be(want);
            if (want == StorageStatus.Ok)
            {
                ents.Select(e => e.Index).Should().Equal(Enumerable.Range((int)lo, (int)(hi - lo)).Select(i => (ulong)i));
                ents.All(e => e.Data.Length == 8 && e.Data.Span[0] == (byte)e.Index).Should().BeTrue();
            }

            await Reopen();
        }
    }

    [Theory]
    [InlineData(0UL, 1)] // at least one entry even when it alone is over the limit
    [InlineData(32UL, 1)]
    [InlineData(64UL, 2)]
    [InlineData(95UL, 2)]
    [InlineData(96UL, 3)]
    public void Entries_stop_at_max_size(ulong maxSize, int want)
    {
        _store.Save(null, Range(1, 5, 1), null); // each entry: 8 bytes + 24
        _store.Entries(1, 6, maxSize, out var ents).Should().Be(StorageStatus.Ok);
        ents.Should().HaveCount(want);
    }

    [Fact]
    public void Retained_payloads_are_copies_packed_into_shared_segments()
    {
        // 3 KiB payloads: a 1 MiB segment holds 341 of them, so 1,000 entries span three segments.
        var saved = Enumerable.Range(1, 1000).Select(i => E((ulong)i, 1, size: 3072)).ToList();
        _store.Save(null, saved, null);
        foreach (var e in saved)
        {
            MemoryMarshal.AsMemory(e.Data).Span.Clear(); // the caller reuses its buffers once Save returned
        }

        _store.Entries(1, 1001, ulong.MaxValue, out var ents).Should().Be(StorageStatus.Ok);
        ents.Select(e => e.Data.ToArray().All(b => b == (byte)e.Index) && e.Data.Length == 3072).Should().AllBeEquivalentTo(true);
        ents.Select(e => MemoryMarshal.TryGetArray(e.Data, out var a) ? a.Array : null).Distinct().Should().HaveCount(3);
    }

    [Fact]
    public void A_payload_too_large_to_share_a_segment_is_kept_as_it_is()
    {
        var large = E(1, 1, size: 512 * 1024);
        _store.Save(null, [large, E(2, 1)], null);
        _store.Entries(1, 3, ulong.MaxValue, out var ents).Should().Be(StorageStatus.Ok);
        MemoryMarshal.TryGetArray(ents[0].Data, out var kept).Should().BeTrue();
        MemoryMarshal.TryGetArray(large.Data, out var given).Should().BeTrue();
        kept.Array.Should().BeSameAs(given.Array);
        ents[1].Data.ToArray().Should().Equal(Enumerable.Repeat((byte)2, 8));
    }

    [Fact]
    public async Task Term_first_and_last_index_around_the_snapshot()
    {
        _store.FirstIndex().Should().Be(1);
        _store.LastIndex().Should().Be(0);
        _store.Term(0, out var t0).Should().Be(StorageStatus.Ok);
        t0.Should().Be(0);
        _store.Term(1, out _).Should().Be(StorageStatus.Unavailable);

        _store.Save(new HardState(3, 2, 10), Range(1, 10, 3), null);
        _store.CreateSnapshot(5, ConfState.Empty);
        await _store.SyncAsync();
        _store.Compact(5);
        for (var pass = 0; pass < 2; pass++)
        {
            _store.FirstIndex().Should().Be(6);
            _store.LastIndex().Should().Be(10);
            _store.Term(5, out var t).Should().Be(StorageStatus.Ok);
            t.Should().Be(3);
            _store.Term(4, out _).Should().Be(StorageStatus.Compacted);
            _store.Term(10, out _).Should().Be(StorageStatus.Ok);
            _store.Term(11, out _).Should().Be(StorageStatus.Unavailable);
            await Reopen();
        }
    }

    [Fact]
    public async Task Only_what_was_synced_survives_a_crash()
    {
        _store.Save(new HardState(1, 1, 3), Range(1, 3, 1), null);
        await _store.SyncAsync();
        _store.Save(new HardState(2, 2, 5), Range(4, 6, 2), null);

        // Crash: the unsynced records never reach the disk image (copied before the WAL closes, which would commit).
        CrashImage.Copy(_tmp.Sub("wal"), _tmp.Sub("crash"));
        using var crashed = WriteAheadLog.Open(_tmp.Sub("crash"), NullLogger.Instance);
        var store = RaftLogStore.Open(crashed, NullLogger.Instance);
        store.LastIndex().Should().Be(3);
        store.InitialState().HardState.Should().Be(new HardState(1, 1, 3));
    }

    [Fact]
    public async Task Conflicting_suffix_is_replaced_and_stays_replaced_after_reopen()
    {
        _store.Save(new HardState(1, 1, 2), Range(1, 6, 1), null);
        await _store.SyncAsync();
        _store.Save(new HardState(2, 2, 2), [E(4, 2), E(5, 2)], null);
        _store.LastIndex().Should().Be(5);
        await Reopen();
        _store.LastIndex().Should().Be(5);
        _store.Entries(1, 6, ulong.MaxValue, out var ents).Should().Be(StorageStatus.Ok);
        ents.Select(e => (e.Index, e.Term)).Should().Equal((1UL, 1UL), (2UL, 1UL), (3UL, 1UL), (4UL, 2UL), (5UL, 2UL));
        _store.InitialState().HardState.Should().Be(new HardState(2, 2, 2));
    }

    [Fact]
    public async Task Gap_after_last_index_is_refused()
    {
        _store.Save(null, Range(1, 3, 1), null);
        var act = () => _store.Save(null, [E(5, 1)], null);
        act.Should().Throw<InvalidOperationException>().WithMessage("*missing log entry*");
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Installed_snapshot_replaces_the_log_and_survives_reopen_with_its_membership()
    {
        // Local log 1..8 at term 1 whose suffix conflicts with the leader's; the leader sends a snapshot at 6/term 2.
        _store.Save(new HardState(1, 0, 3), Range(1, 8, 1), null);
        await _store.SyncAsync();
        var snap = new KvStore.Raft.Snapshot
        {
            Metadata = new SnapshotMetadata { Index = 6, Term = 2, ConfState = new ConfState { Voters = [1, 2, 3], Learners = [4] } },
        };
        _store.Save(new HardState(2, 0, 6), [], snap);
        await _store.SyncAsync();
        for (var pass = 0; pass < 2; pass++)
        {
            _store.FirstIndex().Should().Be(7);
            _store.LastIndex().Should().Be(6, "the old entries 7..8 of the local log are gone too");
            _store.Term(6, out var t).Should().Be(StorageStatus.Ok);
            t.Should().Be(2);
            _store.Snapshot(out var s);
            s.Metadata.Index.Should().Be(6);
            var init = _store.InitialState();
            init.HardState.Should().Be(new HardState(2, 0, 6));
            init.ConfState.Voters.Should().Equal(1UL, 2UL, 3UL);
            init.ConfState.Learners.Should().Equal(4UL);
            await Reopen();
        }

        // Older snapshots are ignored; new entries follow the snapshot.
        _store.ApplySnapshot(new KvStore.Raft.Snapshot { Metadata = new SnapshotMetadata { Index = 5, Term = 2 } }).Should().BeFalse();
        _store.Save(new HardState(2, 0, 7), [E(7, 2, type: EntryType.ConfChange)], null);
        await Reopen();
        _store.Entries(7, 8, ulong.MaxValue, out var ents).Should().Be(StorageStatus.Ok);
        ents.Single().Type.Should().Be(EntryType.ConfChange);
        _store.LastIndex().Should().Be(7);
    }

    [Fact]
    public async Task Compaction_releases_the_wal_and_keeps_hard_state_and_membership_across_reopens()
    {
        await SnapshotAndCompactAt5();
        _store.Save(new HardState(2, 1, 12), Range(11, 12, 2), null);
        _store.CreateSnapshot(11, new ConfState { Voters = [1, 2] });
        await _store.SyncAsync();
        _store.Compact(11);
        await Reopen();
        _store.FirstIndex().Should().Be(12);
        _store.LastIndex().Should().Be(12);
        _store.InitialState().ConfState.Voters.Should().Equal(1UL, 2UL);
        _store.InitialState().HardState.Should().Be(new HardState(2, 1, 12));
        _wal.Replay().Entries.Select(e => e.Index).Should().Equal(12UL);
    }

    [Fact]
    public void Compact_past_the_snapshot_is_refused()
    {
        _store.Save(null, Range(1, 10, 1), null);
        _store.CreateSnapshot(4, ConfState.Empty);
        var act = () => _store.Compact(6);
        act.Should().Throw<InvalidOperationException>().WithMessage("*past the last snapshot 4*");
        Indexes(_store, 1, 11).Should().HaveCount(10);
    }

    [Fact]
    public async Task Wal_released_without_a_marker_fails_open_with_a_clear_message()
    {
        _wal.Append(new WalEntry(1, 1, 0, new byte[1]));
        _wal.Append(new WalEntry(2, 1, 0, new byte[1]));
        _wal.Append(new WalEntry(3, 1, 0, new byte[1]));
        await _wal.SyncAsync();
        _wal.ReleaseBefore(3);
        _wal.Dispose();
        _wal = WriteAheadLog.Open(_tmp.Sub("wal"), NullLogger.Instance);
        var act = () => RaftLogStore.Open(_wal, NullLogger.Instance);
        act.Should().Throw<InvalidDataException>().WithMessage("*holds entry 3 after index 0*");
    }
}
