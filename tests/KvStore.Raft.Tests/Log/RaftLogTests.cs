using KvStore.Raft.Log;
using KvStore.Raft.Storage;
using static KvStore.Raft.Tests.Log.LogBuilder;

namespace KvStore.Raft.Tests.Log;

/// <summary>
/// The log as the core sees it: stable entries in storage followed by unstable ones. Most cases start from a small
/// log and check one operation's edge: the first conflicting entry, appends that overwrite a suffix, commit and
/// apply bounds, terms around a compacted prefix, size-limited slices and snapshot restore.
/// </summary>
public sealed class RaftLogTests
{
    private static RaftLog LogWithUnstable(params ulong[] terms)
    {
        var log = NewLog(new InMemoryRaftStorage());
        log.Append(Entries(1, terms));
        return log;
    }

    public static TheoryData<ulong, ulong[], ulong> ConflictCases => new()
    {
        // Nothing offered, or everything offered already present with the same terms.
        { 1, [], 0 },
        { 1, [1, 2, 3], 0 },
        { 2, [2, 3], 0 },
        { 3, [3], 0 },

        // Matching prefix, then entries the log does not have yet: the first new one is reported.
        { 1, [1, 2, 3, 4, 4], 4 },
        { 2, [2, 3, 4, 5], 4 },
        { 3, [3, 4, 4], 4 },
        { 4, [4, 4], 4 },

        // A term differs from the log's: that index is the conflict.
        { 1, [4, 4], 1 },
        { 2, [1, 4, 4], 2 },
        { 3, [1, 2, 4, 4], 3 },
    };

    [Theory]
    [MemberData(nameof(ConflictCases))]
    public void Find_conflict_reports_the_first_entry_that_is_new_or_has_another_term(ulong first, ulong[] terms, ulong want)
    {
        var log = LogWithUnstable(1, 2, 3);
        log.FindConflict(Entries(first, terms)).Should().Be(want);
    }

    public static TheoryData<ulong, ulong[], ulong, ulong, ulong> ConflictByTermCases => new()
    {
        // Log 1..5 with terms 2,2,5,5,5 after an empty snapshot.
        { 0, [2, 2, 5, 5, 5], 100, 2, 100 }, // beyond the log: nothing to skip
        { 0, [2, 2, 5, 5, 5], 5, 6, 5 },
        { 0, [2, 2, 5, 5, 5], 5, 5, 5 },
        { 0, [2, 2, 5, 5, 5], 5, 4, 2 },
        { 0, [2, 2, 5, 5, 5], 5, 2, 2 },
        { 0, [2, 2, 5, 5, 5], 5, 1, 0 },
        { 0, [2, 2, 5, 5, 5], 1, 1, 0 },

        // Snapshot at 10 (term 3), then 11..15 with terms 3,3,4,4,4.
        { 10, [3, 3, 4, 4, 4], 14, 4, 14 },
        { 10, [3, 3, 4, 4, 4], 14, 3, 12 },
        { 10, [3, 3, 4, 4, 4], 14, 2, 9 }, // walks into the compacted prefix and stops there
        { 10, [3, 3, 4, 4, 4], 10, 3, 10 },
        { 10, [3, 3, 4, 4, 4], 4, 2, 4 }, // already compacted
    };

    [Theory]
    [MemberData(nameof(ConflictByTermCases))]
    public void Find_conflict_by_term_skips_every_index_whose_term_is_too_new(ulong snapIndex, ulong[] terms, ulong index, ulong term, ulong want)
    {
        var storage = StorageFromSnapshot(snapIndex, 3);
        var log = NewLog(storage);
        log.Append(Entries(snapIndex + 1, terms));
        log.FindConflictByTerm(index, term).Should().Be(want);
    }

    public static TheoryData<ulong, ulong, bool> UpToDateCases => new()
    {
        // A higher last term wins whatever the length.
        { 2, 4, true },
        { 3, 4, true },
        { 4, 4, true },

        // A lower last term loses whatever the length.
        { 2, 2, false },
        { 3, 2, false },
        { 4, 2, false },

        // The same last term: the longer (or equal) log is up to date.
        { 2, 3, false },
        { 3, 3, true },
        { 4, 3, true },
    };

    [Theory]
    [MemberData(nameof(UpToDateCases))]
    public void A_candidate_log_is_up_to_date_by_last_term_then_by_length(ulong lastIndex, ulong lastTerm, bool want)
    {
        var log = LogWithUnstable(1, 2, 3);
        log.IsUpToDate(lastIndex, lastTerm).Should().Be(want);
    }

    public static TheoryData<ulong, ulong[], ulong, ulong[], ulong[]> AppendCases => new()
    {
        // first, terms to append, returned last index, every term in the log, indexes left unstable.
        { 3, [], 2, [1, 2], [] },
        { 3, [2], 3, [1, 2, 2], [3] },
        { 1, [2], 1, [2], [1] },       // replaces the whole stored log
        { 2, [3, 3], 3, [1, 3, 3], [2, 3] }, // replaces the stored suffix from 2
    };

    [Theory]
    [MemberData(nameof(AppendCases))]
    public void Append_after_stored_entries_overwrites_the_conflicting_suffix(ulong first, ulong[] terms, ulong wantLast, ulong[] wantTerms, ulong[] wantUnstable)
    {
        var storage = new InMemoryRaftStorage();
        storage.Append(Entries(1, 1, 2));
        var log = NewLog(storage);

        log.Append(Entries(first, terms)).Should().Be(wantLast);

        log.EntriesFrom(1, ulong.MaxValue, out var all).Should().Be(StorageStatus.Ok);
        all.Select(e => e.Term).Should().Equal(wantTerms);
        Indexes(log.UnstableEntries()).Should().Equal(wantUnstable);
    }

    [Fact]
    public void Append_that_would_rewrite_a_committed_entry_is_refused()
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(2);

        var act = () => log.Append(Entries(2, 4));

        act.Should().Throw<RaftInvariantException>();
        Ids(log.UnstableEntries()).Should().Equal((1UL, 1UL), (2UL, 2UL), (3UL, 3UL));
    }

    public static TheoryData<ulong, ulong, ulong, ulong, ulong[], ulong?, ulong> MaybeAppendCases => new()
    {
        // Log 1..3 with terms 1,2,3, committed 1.
        // prev index, prev term, leader commit, first, terms, returned last new index (null: rejected), commit after.

        // The previous entry does not match: rejected, nothing changes.
        { 3, 2, 3, 4, [4], null, 1 },
        { 4, 3, 3, 5, [4], null, 1 },

        // A heartbeat-like append with no entries only moves the commit, never past the last new index.
        { 3, 3, 3, 4, [], 3, 3 },
        { 3, 3, 4, 4, [], 3, 3 },
        { 3, 3, 2, 4, [], 3, 2 },
        { 3, 3, 0, 4, [], 3, 1 }, // commit never decreases
        { 0, 0, 3, 1, [], 0, 1 },

        // New entries after the last one.
        { 3, 3, 3, 4, [4], 4, 3 },
        { 3, 3, 4, 4, [4], 4, 4 },
        { 3, 3, 5, 4, [4], 4, 4 },
        { 3, 3, 5, 4, [4, 4], 5, 5 },

        // New entries that overwrite an uncommitted suffix.
        { 2, 2, 3, 3, [4], 3, 3 },
        { 1, 1, 3, 2, [4], 2, 2 },
        { 1, 1, 3, 2, [4, 4], 3, 3 },
    };

    [Theory]
    [MemberData(nameof(MaybeAppendCases))]
    public void Maybe_append_checks_the_previous_entry_then_appends_and_commits(
        ulong prevIndex, ulong prevTerm, ulong leaderCommit, ulong first, ulong[] terms, ulong? wantLastNew, ulong wantCommit)
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(1);
        var ents = Entries(first, terms);

        log.MaybeAppend(prevIndex, prevTerm, leaderCommit, ents).Should().Be(wantLastNew);

        log.Committed.Should().Be(wantCommit);
        if (wantLastNew is not null && ents.Count > 0)
        {
            log.Slice(first, first + (ulong)ents.Count, ulong.MaxValue, out var got).Should().Be(StorageStatus.Ok);
            Ids(got).Should().Equal(Ids(ents));
            log.LastIndex().Should().Be(wantLastNew.Value);
        }
    }

    [Fact]
    public void Maybe_append_refuses_to_overwrite_a_committed_entry()
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(1);

        var act = () => log.MaybeAppend(0, 0, 3, Entries(1, 4));

        act.Should().Throw<RaftInvariantException>().WithMessage("*conflicts with committed entry*");
        log.Committed.Should().Be(1);
    }

    [Theory]
    [InlineData(3UL, 3UL)]
    [InlineData(1UL, 2UL)] // commit never decreases
    public void Commit_to_only_moves_forward(ulong commitTo, ulong want)
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(2);
        log.CommitTo(commitTo);
        log.Committed.Should().Be(want);
    }

    [Fact]
    public void Commit_to_beyond_the_last_index_is_a_broken_invariant()
    {
        var log = LogWithUnstable(1, 2, 3);
        var act = () => log.CommitTo(4);
        act.Should().Throw<RaftInvariantException>().WithMessage("*out of range*");
    }

    [Theory]
    [InlineData(3UL, 1UL, false)] // the entry at 3 has term 3
    [InlineData(3UL, 3UL, true)]
    [InlineData(1UL, 1UL, false)] // not above the current commit
    [InlineData(4UL, 3UL, false)] // beyond the log
    public void Maybe_commit_needs_a_higher_index_whose_term_matches(ulong index, ulong term, bool want)
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(1);
        log.MaybeCommit(index, term).Should().Be(want);
        log.Committed.Should().Be(want ? index : 1);
    }

    [Theory]
    [InlineData(0UL, 1UL, false)] // zero means "nothing applied" and is ignored
    [InlineData(1UL, 1UL, false)]
    [InlineData(2UL, 2UL, false)]
    [InlineData(3UL, 1UL, true)] // beyond the commit
    public void Applied_stays_between_the_previous_applied_and_the_commit(ulong appliedTo, ulong want, bool wantThrow)
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(2);
        log.AppliedTo(1);

        var act = () => log.AppliedTo(appliedTo);

        if (wantThrow)
        {
            act.Should().Throw<RaftInvariantException>();
        }
        else
        {
            act.Should().NotThrow();
        }

        log.Applied.Should().Be(want);
    }

    [Fact]
    public void Applied_never_goes_back()
    {
        var log = LogWithUnstable(1, 2, 3);
        log.CommitTo(3);
        log.AppliedTo(2);

        var act = () => log.AppliedTo(1);

        act.Should().Throw<RaftInvariantException>();
        log.Applied.Should().Be(2);
    }

    [Theory]
    [InlineData(1UL, 1UL, new ulong[] { 2 })]
    [InlineData(2UL, 2UL, new ulong[] { })]
    [InlineData(2UL, 1UL, new ulong[] { 1, 2 })] // the entry at 2 has another term now: a stale acknowledgement
    [InlineData(3UL, 1UL, new ulong[] { 1, 2 })] // no entry at 3
    public void Stable_to_drops_persisted_entries_unless_the_term_is_stale(ulong index, ulong term, ulong[] wantUnstable)
    {
        var log = LogWithUnstable(1, 2);
        log.StableTo(index, term);
        Indexes(log.UnstableEntries()).Should().Equal(wantUnstable);
    }

    public static TheoryData<ulong, ulong, bool, ulong[]> StableWithSnapshotCases => new()
    {
        // Storage holds a snapshot at 5 (term 2); optionally the entry 6 (term 2) is unstable.
        { 6, 2, false, [] },
        { 5, 2, false, [] },
        { 4, 2, false, [] },
        { 6, 3, false, [] },
        { 6, 2, true, [] },
        { 5, 2, true, [6] }, // the snapshot index is not an unstable entry
        { 4, 2, true, [6] },
        { 6, 3, true, [6] }, // stale term
        { 5, 3, true, [6] },
    };

    [Theory]
    [MemberData(nameof(StableWithSnapshotCases))]
    public void Stable_to_after_a_stored_snapshot_only_touches_unstable_entries(ulong index, ulong term, bool withEntry, ulong[] wantUnstable)
    {
        var log = NewLog(StorageFromSnapshot(5, 2));
        if (withEntry)
        {
            log.Append(Entries(6, 2));
        }

        log.StableTo(index, term);

        Indexes(log.UnstableEntries()).Should().Equal(wantUnstable);
    }

    [Fact]
    public void Compacting_storage_underneath_keeps_terms_and_unstable_entries()
    {
        var storage = new InMemoryRaftStorage();
        storage.Append(TermEqualsIndex(1, 751));
        var log = NewLog(storage);
        log.Append(TermEqualsIndex(751, 1001));
        log.MaybeCommit(1000, 1000).Should().BeTrue();
        log.AppliedTo(log.Committed);

        storage.CreateSnapshot(500, ConfState.Empty, ReadOnlyMemory<byte>.Empty);
        storage.Compact(500);

        log.FirstIndex().Should().Be(501);
        log.LastIndex().Should().Be(1000);
        for (ulong i = 500; i <= 1000; i++)
        {
            log.Term(i, out var t).Should().Be(StorageStatus.Ok);
            t.Should().Be(i);
            log.MatchTerm(i, i).Should().BeTrue();
        }

        var unstable = log.UnstableEntries();
        unstable.Should().HaveCount(250);
        unstable[0].Index.Should().Be(751);

        log.Append(Entries(1001, 1001)).Should().Be(1001);
        log.EntriesFrom(1001, ulong.MaxValue, out var tail).Should().Be(StorageStatus.Ok);
        Indexes(tail).Should().Equal(1001UL);
    }

    [Theory]
    [InlineData(300UL, 700)]
    [InlineData(500UL, 500)]
    [InlineData(800UL, 200)]
    [InlineData(900UL, 100)]
    public void Compaction_leaves_the_entries_after_the_compact_index(ulong compactIndex, int wantLeft)
    {
        var storage = new InMemoryRaftStorage();
        storage.Append(TermEqualsIndex(1, 1001));
        var log = NewLog(storage);

        storage.Compact(compactIndex);

        log.EntriesFrom(log.FirstIndex(), ulong.MaxValue, out var left).Should().Be(StorageStatus.Ok);
        left.Should().HaveCount(wantLeft);
        log.Slice(compactIndex, 1001, ulong.MaxValue, out _).Should().Be(StorageStatus.Compacted);
    }

    [Fact]
    public void A_log_opened_on_a_snapshot_starts_committed_at_the_snapshot()
    {
        var log = NewLog(StorageFromSnapshot(1000, 1000));

        log.EntriesFrom(log.FirstIndex(), ulong.MaxValue, out var ents).Should().Be(StorageStatus.Ok);
        ents.Should().BeEmpty();
        log.FirstIndex().Should().Be(1001);
        log.LastIndex().Should().Be(1000);
        log.Committed.Should().Be(1000);
        log.Applied.Should().Be(1000);
        log.TermOrZero(1000).Should().Be(1000);
        log.HasUnstable().Should().BeFalse();
    }

    [Fact]
    public void Restore_replaces_the_log_with_a_pending_snapshot()
    {
        var log = LogWithUnstable(1, 1, 2, 2);
        log.CommitTo(2);
        log.AppliedTo(2);
        var snap = Snap(10, 3);

        log.Restore(snap);

        log.UnstableSnapshot.Should().BeSameAs(snap);
        log.HasUnstable().Should().BeFalse();
        log.FirstIndex().Should().Be(11);
        log.LastIndex().Should().Be(10);
        log.LastTerm().Should().Be(3);
        log.Committed.Should().Be(10);
        log.LastStableIndex().Should().Be(0, "nothing of the new log is durable until the snapshot is");
        log.HasNextEntriesToApply().Should().BeFalse("the snapshot itself carries the state up to 10");
        log.Snapshot(out var got).Should().Be(StorageStatus.Ok);
        got.Should().BeSameAs(snap);

        log.AppliedSnapshot(10);
        log.StableSnapTo(10);
        log.UnstableSnapshot.Should().BeNull();
        log.Applied.Should().Be(10);
    }

    [Theory]
    [InlineData(99UL, StorageStatus.Compacted, 0UL)]
    [InlineData(100UL, StorageStatus.Ok, 1UL)] // the snapshot's own index keeps its term
    [InlineData(101UL, StorageStatus.Ok, 1UL)]
    [InlineData(150UL, StorageStatus.Ok, 50UL)]
    [InlineData(200UL, StorageStatus.Ok, 100UL)]
    [InlineData(201UL, StorageStatus.Unavailable, 0UL)]
    public void Term_lookup_covers_the_snapshot_index_to_the_last_entry(ulong index, StorageStatus wantStatus, ulong wantTerm)
    {
        // Snapshot at 100 (term 1), then 101..200 with term = index - 100.
        var log = NewLog(StorageFromSnapshot(100, 1));
        log.Append([.. Enumerable.Range(101, 100).Select(i => new Entry { Index = (ulong)i, Term = (ulong)i - 100 })]);

        log.Term(index, out var term).Should().Be(wantStatus);
        term.Should().Be(wantTerm);
        log.TermOrZero(index).Should().Be(wantTerm);
    }

    [Theory]
    [InlineData(99UL, StorageStatus.Compacted, 0UL)]
    [InlineData(100UL, StorageStatus.Compacted, 0UL)] // the stored snapshot is older than the pending one
    [InlineData(104UL, StorageStatus.Compacted, 0UL)]
    [InlineData(105UL, StorageStatus.Ok, 5UL)]
    [InlineData(106UL, StorageStatus.Unavailable, 0UL)]
    public void Term_lookup_with_a_pending_snapshot_starts_at_that_snapshot(ulong index, StorageStatus wantStatus, ulong wantTerm)
    {
        var storage = StorageFromSnapshot(100, 1);
        storage.Append(Entries(101, 1, 1, 1));
        var log = NewLog(storage);
        log.Restore(Snap(105, 5));

        log.Term(index, out var term).Should().Be(wantStatus);
        term.Should().Be(wantTerm);
    }

    public static TheoryData<ulong, ulong, ulong, StorageStatus, ulong[]> SliceCases => new()
    {
        // Snapshot at 100; 101..149 stored, 150..199 unstable; every entry is 32 bytes.
        { 99, 102, ulong.MaxValue, StorageStatus.Compacted, [] },
        { 100, 102, ulong.MaxValue, StorageStatus.Compacted, [] },
        { 101, 101, ulong.MaxValue, StorageStatus.Ok, [] },
        { 200, 200, ulong.MaxValue, StorageStatus.Ok, [] },
        { 148, 150, ulong.MaxValue, StorageStatus.Ok, [148, 149] },      // stored only
        { 149, 151, ulong.MaxValue, StorageStatus.Ok, [149, 150] },      // across the boundary
        { 150, 152, ulong.MaxValue, StorageStatus.Ok, [150, 151] },      // unstable only
        { 198, 200, ulong.MaxValue, StorageStatus.Ok, [198, 199] },

        // Size limits: the first entry always comes back; more only while the total fits.
        { 149, 151, 0, StorageStatus.Ok, [149] },
        { 149, 151, 63, StorageStatus.Ok, [149] },
        { 149, 151, 64, StorageStatus.Ok, [149, 150] },
        { 148, 152, 96, StorageStatus.Ok, [148, 149, 150] },
        { 146, 152, 64, StorageStatus.Ok, [146, 147] },                 // the limit is reached inside storage
        { 150, 153, 64, StorageStatus.Ok, [150, 151] },                 // the limit is reached in the unstable part
    };

    [Theory]
    [MemberData(nameof(SliceCases))]
    public void Slice_spans_storage_and_unstable_entries_within_a_size_limit(ulong lo, ulong hi, ulong maxSize, StorageStatus wantStatus, ulong[] want)
    {
        var log = SplitLog();
        log.Slice(lo, hi, maxSize, out var got).Should().Be(wantStatus);
        Indexes(got).Should().Equal(want);
    }

    [Theory]
    [InlineData(199UL, 201UL)]
    [InlineData(201UL, 201UL)]
    [InlineData(150UL, 149UL)]
    public void Slice_past_the_last_entry_or_inverted_is_a_broken_invariant(ulong lo, ulong hi)
    {
        var log = SplitLog();
        var act = () => log.Slice(lo, hi, ulong.MaxValue, out _);
        act.Should().Throw<RaftInvariantException>();
    }

    [Theory]
    [InlineData(3UL, ulong.MaxValue, new ulong[] { 4, 5 })]
    [InlineData(4UL, ulong.MaxValue, new ulong[] { 5 })]
    [InlineData(5UL, ulong.MaxValue, new ulong[] { })]
    [InlineData(3UL, 0UL, new ulong[] { 4 })] // a size limit still lets one entry through
    public void Next_entries_to_apply_are_committed_and_not_yet_applied(ulong applied, ulong maxSize, ulong[] want)
    {
        // Snapshot at 3; 4 stored, 5 and 6 unstable; committed through 5.
        var storage = StorageFromSnapshot(3, 1);
        storage.Append(Entries(4, 1));
        var log = NewLog(storage, maxSize);
        log.Append(Entries(4, 1, 1, 1));
        log.StableTo(4, 1);
        log.MaybeCommit(5, 1).Should().BeTrue();
        log.AppliedTo(applied);

        Indexes(log.NextEntriesToApply()).Should().Equal(want);
        log.HasNextEntriesToApply().Should().Be(want.Length > 0);
    }

    [Fact]
    public void Nothing_is_applied_from_the_log_while_a_restored_snapshot_is_pending()
    {
        var storage = StorageFromSnapshot(3, 1);
        storage.Append(Entries(4, 1, 1));
        var log = NewLog(storage);
        log.MaybeCommit(5, 1).Should().BeTrue();

        log.Restore(Snap(6, 1));

        log.HasNextEntriesToApply().Should().BeFalse();
        log.NextEntriesToApply().Should().BeEmpty();
    }

    [Fact]
    public void The_last_stable_index_excludes_stored_entries_about_to_be_overwritten()
    {
        var storage = new InMemoryRaftStorage();
        storage.Append(Entries(1, 1, 1, 1, 1, 1));
        var log = NewLog(storage);
        log.LastStableIndex().Should().Be(5);

        log.Append(Entries(3, 2));

        log.LastStableIndex().Should().Be(2, "stored entries 3..5 are being replaced by an unstable entry");
        log.LastIndex().Should().Be(3);
    }

    /// <summary>Snapshot at 100, 101..149 stored, 150..199 unstable, each entry of term 1 and 32 bytes.</summary>
    private static RaftLog SplitLog()
    {
        var storage = StorageFromSnapshot(100, 1);
        storage.Append(Entries(101, [.. Enumerable.Repeat(1UL, 49)]));
        var log = NewLog(storage);
        log.Append(Entries(150, [.. Enumerable.Repeat(1UL, 50)]));
        return log;
    }
}
