namespace KvStore.Raft.Log;

/// <summary>
/// Entries (and possibly a snapshot) the core has accepted but the caller has not yet persisted.
/// Index mapping: <c>Entries[k]</c> has index <c>Offset + k</c>; a pending snapshot covers up to <c>Offset - 1</c>.
/// </summary>
internal sealed class UnstableLog
{
    public Snapshot? Snapshot { get; private set; }

    public List<Entry> Entries { get; } = [];

    public ulong Offset { get; set; }

    public ulong? MaybeFirstIndex() => Snapshot is null ? null : Snapshot.Metadata.Index + 1;

    public ulong? MaybeLastIndex()
    {
        if (Entries.Count > 0)
        {
            return Offset + (ulong)Entries.Count - 1;
        }

        return Snapshot?.Metadata.Index;
    }

    public ulong? MaybeTerm(ulong i)
    {
        if (i < Offset)
        {
            return Snapshot is not null && Snapshot.Metadata.Index == i ? Snapshot.Metadata.Term : null;
        }

        var last = MaybeLastIndex();
        if (last is null || i > last.Value)
        {
            return null;
        }

        return Entries[(int)(i - Offset)].Term;
    }

    /// <summary>The caller persisted everything up to (i, t): drop it from here, unless it was since replaced.</summary>
    public void StableTo(ulong i, ulong t)
    {
        var gt = MaybeTerm(i);
        if (gt == t && i >= Offset)
        {
            var n = (int)(i + 1 - Offset);
            Entries.RemoveRange(0, n);
            Offset = i + 1;
        }
    }

    public void StableSnapTo(ulong i)
    {
        if (Snapshot is not null && Snapshot.Metadata.Index == i)
        {
            Snapshot = null;
        }
    }

    public void Restore(Snapshot s)
    {
        Offset = s.Metadata.Index + 1;
        Entries.Clear();
        Snapshot = s;
    }

    public void TruncateAndAppend(IReadOnlyList<Entry> ents)
    {
        var after = ents[0].Index;
        if (after == Offset + (ulong)Entries.Count)
        {
            Entries.AddRange(ents);
        }
        else if (after <= Offset)
        {
            // The new entries replace everything unstable; storage will see the overwrite when they are persisted.
            Offset = after;
            Entries.Clear();
            Entries.AddRange(ents);
        }
        else
        {
            var keep = (int)(after - Offset);
            Entries.RemoveRange(keep, Entries.Count - keep);
            Entries.AddRange(ents);
        }
    }

    /// <summary>Entries in [lo, hi), both inside the unstable range.</summary>
    public List<Entry> Slice(ulong lo, ulong hi) => Entries.GetRange((int)(lo - Offset), (int)(hi - lo));
}
