using KvStore.Raft.Log;
using static KvStore.Raft.Tests.Log.LogBuilder;

namespace KvStore.Raft.Tests.Log;

/// <summary>
/// Entries and a snapshot accepted but not yet persisted. Each case builds an unstable log with an optional pending
/// snapshot (index, term) followed by entries at consecutive indexes, and checks one query or transition.
/// </summary>
public sealed class UnstableLogTests
{
    /// <summary>An unstable log with an optional snapshot at <paramref name="snapIndex"/> (0: none) and entries from <paramref name="offset"/>.</summary>
    private static UnstableLog Unstable(ulong snapIndex, ulong snapTerm, ulong offset, params ulong[] terms)
    {
        var u = new UnstableLog();
        if (snapIndex > 0)
        {
            u.Restore(Snap(snapIndex, snapTerm));
        }

        u.Offset = offset;
        u.Entries.AddRange(Entries(offset, terms));
        return u;
    }

    [Theory]
    [InlineData(0UL, 5UL, new ulong[] { 1 }, null)] // entries only: storage knows the first index
    [InlineData(0UL, 0UL, new ulong[] { }, null)]
    [InlineData(4UL, 5UL, new ulong[] { 1 }, 5UL)] // a pending snapshot starts the log after it
    [InlineData(4UL, 5UL, new ulong[] { }, 5UL)]
    public void First_index_is_known_only_with_a_pending_snapshot(ulong snapIndex, ulong offset, ulong[] terms, ulong? want)
    {
        Unstable(snapIndex, 1, offset, terms).MaybeFirstIndex().Should().Be(want);
    }

    [Theory]
    [InlineData(0UL, 5UL, new ulong[] { 1 }, 5UL)]
    [InlineData(4UL, 5UL, new ulong[] { 1 }, 5UL)]
    [InlineData(4UL, 5UL, new ulong[] { }, 4UL)] // no entries: the snapshot's index is the last
    [InlineData(0UL, 0UL, new ulong[] { }, null)]
    public void Last_index_comes_from_entries_then_from_the_snapshot(ulong snapIndex, ulong offset, ulong[] terms, ulong? want)
    {
        Unstable(snapIndex, 1, offset, terms).MaybeLastIndex().Should().Be(want);
    }

    public static TheoryData<ulong, ulong, ulong[], ulong, ulong?> TermCases => new()
    {
        // snapshot index (0: none), offset, entry terms, index asked, term expected.
        { 0, 5, [1], 5, 1 },
        { 0, 5, [1], 6, null },
        { 0, 5, [1], 4, null },
        { 4, 5, [1], 5, 1 },
        { 4, 5, [1], 6, null },
        { 4, 5, [1], 4, 1 }, // the snapshot's own index
        { 4, 5, [1], 3, null },
        { 4, 5, [], 5, null },
        { 4, 5, [], 4, 1 },
        { 0, 0, [], 5, null },
    };

    [Theory]
    [MemberData(nameof(TermCases))]
    public void Term_is_known_for_unstable_entries_and_the_snapshot_index(ulong snapIndex, ulong offset, ulong[] terms, ulong index, ulong? want)
    {
        Unstable(snapIndex, 1, offset, terms).MaybeTerm(index).Should().Be(want);
    }

    [Fact]
    public void Restore_drops_the_entries_and_starts_after_the_snapshot()
    {
        var u = Unstable(4, 1, 5, 1);
        var snap = Snap(6, 2);

        u.Restore(snap);

        u.Offset.Should().Be(7);
        u.Entries.Should().BeEmpty();
        u.Snapshot.Should().BeSameAs(snap);
        u.MaybeLastIndex().Should().Be(6);
        u.MaybeTerm(6).Should().Be(2);
    }

    public static TheoryData<ulong, ulong, ulong, ulong[], ulong, ulong, ulong, int> StableToCases => new()
    {
        // snapshot (index, term; 0: none), offset, entry terms, stable to (index, term), offset and entry count after.
        { 0, 0, 0, [], 5, 1, 0, 0 },          // nothing unstable
        { 0, 0, 5, [1], 5, 1, 6, 0 },
        { 0, 0, 5, [1, 1], 5, 1, 6, 1 },      // only a prefix is persisted
        { 0, 0, 6, [2], 6, 1, 6, 1 },         // the entry at 6 was replaced by a newer term since
        { 0, 0, 5, [1], 4, 1, 5, 1 },         // an index before the unstable entries
        { 0, 0, 5, [1], 4, 2, 5, 1 },
        { 4, 1, 5, [1], 5, 1, 6, 0 },         // the same with a pending snapshot
        { 4, 1, 5, [1, 1], 5, 1, 6, 1 },
        { 5, 1, 6, [2], 6, 1, 6, 1 },
        { 4, 1, 5, [1], 4, 1, 5, 1 },         // the snapshot's index is not an entry to stabilise
        { 4, 2, 5, [2], 4, 1, 5, 1 },
    };

    [Theory]
    [MemberData(nameof(StableToCases))]
    public void Stable_to_drops_a_persisted_prefix_only_when_index_and_term_match(
        ulong snapIndex, ulong snapTerm, ulong offset, ulong[] terms, ulong index, ulong term, ulong wantOffset, int wantCount)
    {
        var u = Unstable(snapIndex, snapTerm, offset, terms);

        u.StableTo(index, term);

        u.Offset.Should().Be(wantOffset);
        u.Entries.Should().HaveCount(wantCount);
        if (wantCount > 0)
        {
            u.Entries[0].Index.Should().Be(wantOffset, "the first unstable entry always sits at the offset");
        }
    }

    [Theory]
    [InlineData(4UL, true)]
    [InlineData(3UL, false)] // an older snapshot was persisted, not the pending one
    [InlineData(5UL, false)]
    public void Stable_snap_to_clears_only_the_pending_snapshot_it_names(ulong index, bool wantCleared)
    {
        var u = Unstable(4, 1, 5, 1);

        u.StableSnapTo(index);

        if (wantCleared)
        {
            u.Snapshot.Should().BeNull();
        }
        else
        {
            u.Snapshot.Should().NotBeNull();
        }

        u.Entries.Should().HaveCount(1, "entries are stabilised separately");
    }

    public static TheoryData<ulong[], ulong, ulong[], ulong, ulong[]> TruncateAndAppendCases => new()
    {
        // terms from offset 5, appended (first index, terms), offset after, terms from that offset after.
        { [1], 6, [1, 1], 5, [1, 1, 1] },          // right after the last entry
        { [1], 5, [2, 2], 5, [2, 2] },             // replaces every unstable entry
        { [1], 4, [2, 2, 2], 4, [2, 2, 2] },       // starts before the offset: storage gets overwritten too
        { [1, 1, 1], 6, [2], 5, [1, 2] },          // truncates the middle
        { [1, 1, 1], 7, [2, 2], 5, [1, 1, 2, 2] },
    };

    [Theory]
    [MemberData(nameof(TruncateAndAppendCases))]
    public void Truncate_and_append_keeps_the_prefix_before_the_first_new_entry(
        ulong[] terms, ulong first, ulong[] appended, ulong wantOffset, ulong[] wantTerms)
    {
        var u = Unstable(0, 0, 5, terms);

        u.TruncateAndAppend(Entries(first, appended));

        u.Offset.Should().Be(wantOffset);
        Ids(u.Entries).Should().Equal(Ids(Entries(wantOffset, wantTerms)));
    }

    [Fact]
    public void Slice_maps_indexes_through_the_offset()
    {
        var u = Unstable(0, 0, 5, 1, 2, 3, 4);
        Ids(u.Slice(6, 8)).Should().Equal((6UL, 2UL), (7UL, 3UL));
    }
}
