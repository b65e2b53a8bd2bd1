namespace KvStore.Storage.Mvcc;

/// <summary>
/// One lifetime of a key: from its creation to its deletion (the tombstone is the last revision).
/// <see cref="Version"/> counts the puts of the generation (including the tombstone once closed, as etcd does).
/// </summary>
internal sealed class Generation
{
    public long Version;
    public Revision Created;

    // Room for one revision: most keys of a large store hold one live revision between compactions, and the default
    // first growth (to four) cost 48 bytes per key of the index, which lives in memory for every key.
    public List<Revision> Revisions = new(1);

    public bool IsEmpty => Revisions.Count == 0;
}

/// <summary>
/// The revision history of one key, in etcd's keyIndex shape. Example (put@1, put@2, delete@3, put@4):
/// <code>
///   generations: [ {created 1, ver 3, revs 1 2 3(tombstone)}, {created 4, ver 1, revs 4} ]
/// </code>
/// A closed generation ends with its tombstone; the last generation is open (maybe empty: key deleted).
/// Mutated only by the writer under the store's index write lock; read under the read lock.
/// </summary>
internal sealed class KeyIndex
{
    public KeyIndex(byte[] key)
    {
        Key = key;
        Generations.Add(new Generation());
    }

    public byte[] Key { get; }

    // One generation until the key is deleted (as with Generation.Revisions, the default first growth is four).
    public List<Generation> Generations { get; } = new(1);

    public Revision Modified { get; private set; }

    /// <summary>The lease of the key's latest put; 0 when it has none or the key is deleted (what a lease's recovery attaches).</summary>
    public long Lease { get; private set; }

    /// <summary>True when nothing is left (one empty generation).</summary>
    public bool IsEmpty => Generations.Count == 1 && Generations[0].IsEmpty;

    public void Put(Revision rev, long lease)
    {
        Append(rev);
        Lease = lease;
    }

    /// <summary>Recovery: first record seen of a key whose older revisions were compacted away.</summary>
    public void Restore(Revision created, Revision modified, long version, long lease)
    {
        var g = Generations[^1];
        g.Created = created;
        g.Version = version;
        g.Revisions.Add(modified);
        Modified = modified;
        Lease = lease;
    }

    public void Tombstone(Revision rev)
    {
        Append(rev);
        Lease = 0;
        Generations.Add(new Generation());
    }

    private void Append(Revision rev)
    {
        var g = Generations[^1];
        if (g.IsEmpty)
        {
            g.Created = rev;
        }

        g.Revisions.Add(rev);
        g.Version++;
        Modified = rev;
    }

    /// <summary>The revision visible at atRev (latest &lt;= atRev in the generation alive at atRev).</summary>
    public bool TryGet(long atRev, out Revision modified, out long createRevision, out long version)
    {
        modified = default;
        createRevision = 0;
        version = 0;
        var g = FindGeneration(atRev);
        if (g is null)
        {
            return false;
        }

        for (var i = g.Revisions.Count - 1; i >= 0; i--)
        {
            if (g.Revisions[i].Main <= atRev)
            {
                modified = g.Revisions[i];
                createRevision = g.Created.Main;
                version = g.Version - (g.Revisions.Count - i - 1);
                return true;
            }
        }

        return false;
    }

    /// <summary>The generation that holds the key alive at rev, or null if the key does not exist at rev.</summary>
    private Generation? FindGeneration(long rev)
    {
        var last = Generations.Count - 1;
        for (var i = last; i >= 0; i--)
        {
            var g = Generations[i];
            if (g.IsEmpty)
            {
                continue;
            }

            // A closed generation whose tombstone is at or before rev: the key is deleted at rev.
            if (i != last && g.Revisions[^1].Main <= rev)
            {
                return null;
            }

            if (g.Revisions[0].Main <= rev)
            {
                return g;
            }
        }

        return null;
    }

    /// <summary>
    /// etcd's doCompact: skip generations whose tombstone is at or before atRev, then in the first remaining one
    /// find the latest revision &lt;= atRev and add it to available. Returns (generation index, revision index or -1).
    /// </summary>
    private (int GenIdx, int RevIdx) DoCompact(long atRev, HashSet<Revision> available)
    {
        var genIdx = 0;
        while (genIdx < Generations.Count - 1 && Generations[genIdx].Revisions[^1].Main <= atRev)
        {
            genIdx++;
        }

        var g = Generations[genIdx];
        for (var i = g.Revisions.Count - 1; i >= 0; i--)
        {
            if (g.Revisions[i].Main <= atRev)
            {
                available.Add(g.Revisions[i]);
                return (genIdx, i);
            }
        }

        return (genIdx, -1);
    }

    /// <summary>Drops history before atRev, keeping the revision visible at atRev (etcd keyIndex.compact).</summary>
    public void Compact(long atRev, HashSet<Revision> available)
    {
        var (genIdx, revIdx) = DoCompact(atRev, available);
        var g = Generations[genIdx];
        if (!g.IsEmpty)
        {
            if (revIdx != -1)
            {
                g.Revisions.RemoveRange(0, revIdx);
            }

            // A closed generation reduced to its tombstone disappears entirely.
            if (g.Revisions.Count == 1 && genIdx != Generations.Count - 1)
            {
                available.Remove(g.Revisions[0]);
                genIdx++;
            }
        }

        Generations.RemoveRange(0, genIdx);
    }

    /// <summary>Which revision compaction at atRev would keep (etcd keyIndex.keep, used by HashKV).</summary>
    public void Keep(long atRev, HashSet<Revision> available)
    {
        if (IsEmpty)
        {
            return;
        }

        var (genIdx, revIdx) = DoCompact(atRev, available);
        var g = Generations[genIdx];
        if (!g.IsEmpty && revIdx == g.Revisions.Count - 1 && genIdx != Generations.Count - 1)
        {
            available.Remove(g.Revisions[revIdx]);
        }
    }

    /// <summary>All revisions of this key (every generation), for compaction bookkeeping.</summary>
    public IEnumerable<Revision> AllRevisions() => Generations.SelectMany(g => g.Revisions);
}

/// <summary>Orders key indexes by key bytes (unsigned lexicographic, like etcd's btree of keys).</summary>
internal sealed class KeyIndexComparer : IComparer<KeyIndex>
{
    public static readonly KeyIndexComparer Instance = new();

    public int Compare(KeyIndex? x, KeyIndex? y) => x!.Key.AsSpan().SequenceCompareTo(y!.Key);
}
