using KvStore.Raft.Storage;

namespace KvStore.Raft.Log;

/// <summary>
/// The log as the core sees it: stable entries in <see cref="IRaftStorage"/> followed by unstable ones.
/// Invariant: Applied ≤ Committed ≤ LastIndex, and FirstIndex - 1 ≤ Applied (after a snapshot is handed out).
/// </summary>
internal sealed class RaftLog
{
    private readonly IRaftStorage _storage;
    private readonly UnstableLog _unstable = new();
    private readonly ulong _maxNextEntsSize;
    private readonly Action<string> _panic;

    public RaftLog(IRaftStorage storage, ulong maxNextEntsSize, Action<string> panic)
    {
        _storage = storage;
        _maxNextEntsSize = maxNextEntsSize;
        _panic = panic;
        var first = storage.FirstIndex();
        _unstable.Offset = storage.LastIndex() + 1;
        Committed = first - 1;
        Applied = first - 1;
    }

    public ulong Committed { get; private set; }

    public ulong Applied { get; private set; }

    public Snapshot? UnstableSnapshot => _unstable.Snapshot;

    public ulong FirstIndex() => _unstable.MaybeFirstIndex() ?? _storage.FirstIndex();

    public ulong LastIndex() => _unstable.MaybeLastIndex() ?? _storage.LastIndex();

    public ulong LastTerm() => TermOrZero(LastIndex());

    /// <summary>
    /// The last index known durable and still part of this log: what the member itself may count as stored.
    /// Stored entries past the first unstable one are about to be replaced, so they do not count.
    /// </summary>
    public ulong LastStableIndex() => _unstable.Snapshot is not null ? 0 : Math.Min(_storage.LastIndex(), _unstable.Offset - 1);

    public StorageStatus Term(ulong i, out ulong term)
    {
        term = 0;
        var dummy = FirstIndex() - 1;
        if (i < dummy)
        {
            return StorageStatus.Compacted;
        }

        if (i > LastIndex())
        {
            return StorageStatus.Unavailable;
        }

        var t = _unstable.MaybeTerm(i);
        if (t is not null)
        {
            term = t.Value;
            return StorageStatus.Ok;
        }

        var status = _storage.Term(i, out term);
        if (status == StorageStatus.Unavailable)
        {
            _panic($"raft log: term of {i} unavailable in storage (first {FirstIndex()}, last {LastIndex()})");
        }

        return status;
    }

    /// <summary>The term at <paramref name="i"/>, or 0 when it is compacted or beyond the log.</summary>
    public ulong TermOrZero(ulong i) => Term(i, out var t) == StorageStatus.Ok ? t : 0;

    public bool MatchTerm(ulong i, ulong term) => Term(i, out var t) == StorageStatus.Ok && t == term;

    /// <summary>Appends after a consistency check at (index, logTerm); returns the last new index, or null on mismatch.</summary>
    public ulong? MaybeAppend(ulong index, ulong logTerm, ulong committed, IReadOnlyList<Entry> ents)
    {
        if (!MatchTerm(index, logTerm))
        {
            return null;
        }

        var lastNew = index + (ulong)ents.Count;
        var ci = FindConflict(ents);
        if (ci != 0)
        {
            if (ci <= Committed)
            {
                _panic($"raft log: entry {ci} conflicts with committed entry [committed({Committed})]");
            }

            var skip = (int)(ci - (index + 1));
            Append(skip == 0 ? ents : ents.Skip(skip).ToList());
        }

        CommitTo(Math.Min(committed, lastNew));
        return lastNew;
    }

    public ulong Append(IReadOnlyList<Entry> ents)
    {
        if (ents.Count == 0)
        {
            return LastIndex();
        }

        var after = ents[0].Index - 1;
        if (after < Committed)
        {
            _panic($"raft log: append after {after} is out of range [committed({Committed})]");
        }

        _unstable.TruncateAndAppend(ents);
        return LastIndex();
    }

    /// <summary>Index of the first entry whose term differs from ours (or that we lack); 0 when all match.</summary>
    public ulong FindConflict(IReadOnlyList<Entry> ents)
    {
        foreach (var e in ents)
        {
            if (!MatchTerm(e.Index, e.Term))
            {
                return e.Index;
            }
        }

        return 0;
    }

    /// <summary>
    /// The largest index ≤ <paramref name="index"/> whose term is ≤ <paramref name="term"/> (or that is compacted):
    /// every index above it cannot match a log whose entry at <paramref name="index"/> has <paramref name="term"/>.
    /// </summary>
    public ulong FindConflictByTerm(ulong index, ulong term)
    {
        for (var i = index; i > 0; i--)
        {
            if (Term(i, out var t) != StorageStatus.Ok || t <= term)
            {
                return i;
            }
        }

        return 0;
    }

    public List<Entry> UnstableEntries() => [.. _unstable.Entries];

    public bool HasUnstable() => _unstable.Entries.Count > 0;

    /// <summary>Committed entries not yet handed to the application.</summary>
    public IReadOnlyList<Entry> NextEntriesToApply()
    {
        var off = Math.Max(Applied + 1, FirstIndex());
        if (Committed + 1 > off)
        {
            if (Slice(off, Committed + 1, _maxNextEntsSize, out var ents) != StorageStatus.Ok)
            {
                _panic($"raft log: unexpected error fetching committed entries [{off}, {Committed}]");
            }

            return ents;
        }

        return [];
    }

    public bool HasNextEntriesToApply() => Committed + 1 > Math.Max(Applied + 1, FirstIndex());

    public StorageStatus Snapshot(out Snapshot snapshot)
    {
        if (_unstable.Snapshot is not null)
        {
            snapshot = _unstable.Snapshot;
            return StorageStatus.Ok;
        }

        return _storage.Snapshot(out snapshot);
    }

    public void CommitTo(ulong toCommit)
    {
        if (Committed < toCommit)
        {
            if (LastIndex() < toCommit)
            {
                _panic($"raft log: tocommit({toCommit}) is out of range [lastIndex({LastIndex()})]");
            }

            Committed = toCommit;
        }
    }

    public void AppliedTo(ulong i)
    {
        if (i == 0)
        {
            return;
        }

        if (Committed < i || i < Applied)
        {
            _panic($"raft log: applied({i}) is out of range [prevApplied({Applied}), committed({Committed})]");
        }

        Applied = i;
    }

    public void StableTo(ulong i, ulong t) => _unstable.StableTo(i, t);

    public void StableSnapTo(ulong i) => _unstable.StableSnapTo(i);

    /// <summary>Raft §5.4.1: is a log ending at (lastIndex, term) at least as up to date as ours?</summary>
    public bool IsUpToDate(ulong lastIndex, ulong term) => term > LastTerm() || (term == LastTerm() && lastIndex >= LastIndex());

    public bool MaybeCommit(ulong maxIndex, ulong term)
    {
        if (maxIndex > Committed && TermOrZero(maxIndex) == term)
        {
            CommitTo(maxIndex);
            return true;
        }

        return false;
    }

    /// <summary>Replaces the log with a snapshot (entries after it are discarded).</summary>
    public void Restore(Snapshot s)
    {
        Committed = s.Metadata.Index;
        _unstable.Restore(s);
    }

    /// <summary>Marks the restored snapshot as applied once the caller installed it.</summary>
    public void AppliedSnapshot(ulong index)
    {
        if (index > Applied)
        {
            Applied = index;
        }
    }

    /// <summary>Entries from <paramref name="i"/> to the end, size-limited.</summary>
    public StorageStatus EntriesFrom(ulong i, ulong maxSize, out IReadOnlyList<Entry> ents)
    {
        if (i > LastIndex())
        {
            ents = [];
            return StorageStatus.Ok;
        }

        return Slice(i, LastIndex() + 1, maxSize, out ents);
    }

    /// <summary>Entries in [lo, hi), size-limited; Compacted when lo is before the first retained entry.</summary>
    public StorageStatus Slice(ulong lo, ulong hi, ulong maxSize, out IReadOnlyList<Entry> ents)
    {
        ents = [];
        if (lo > hi)
        {
            _panic($"raft log: invalid slice {lo} > {hi}");
        }

        if (lo < FirstIndex())
        {
            return StorageStatus.Compacted;
        }

        if (hi > LastIndex() + 1)
        {
            _panic($"raft log: slice[{lo},{hi}) out of bound [{FirstIndex()},{LastIndex()}]");
        }

        if (lo == hi)
        {
            return StorageStatus.Ok;
        }

        var result = new List<Entry>();
        if (lo < _unstable.Offset)
        {
            var status = _storage.Entries(lo, Math.Min(hi, _unstable.Offset), maxSize, out var stored);
            if (status == StorageStatus.Compacted)
            {
                return status;
            }

            if (status != StorageStatus.Ok)
            {
                _panic($"raft log: entries[{lo}:{Math.Min(hi, _unstable.Offset)}) unavailable from storage");
            }

            if ((ulong)stored.Count < Math.Min(hi, _unstable.Offset) - lo)
            {
                ents = stored;
                return StorageStatus.Ok;
            }

            result.AddRange(stored);
        }

        if (hi > _unstable.Offset)
        {
            result.AddRange(_unstable.Slice(Math.Max(lo, _unstable.Offset), hi));
        }

        ents = LimitSize(result, maxSize);
        return StorageStatus.Ok;
    }

    private static List<Entry> LimitSize(List<Entry> ents, ulong maxSize)
    {
        if (ents.Count == 0)
        {
            return ents;
        }

        var size = ents[0].Size;
        var limit = 1;
        for (; limit < ents.Count; limit++)
        {
            size += ents[limit].Size;
            if (size > maxSize)
            {
                break;
            }
        }

        if (limit < ents.Count)
        {
            ents.RemoveRange(limit, ents.Count - limit);
        }

        return ents;
    }
}
