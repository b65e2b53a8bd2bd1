using KvStore.Raft.Log;
using KvStore.Raft.Storage;

namespace KvStore.Raft.Tests.Log;

/// <summary>Small builders shared by the log tests: entries by (first index, terms) and logs over memory storage.</summary>
internal static class LogBuilder
{
    /// <summary>Entries at consecutive indexes starting at <paramref name="first"/>, one per term given.</summary>
    public static List<Entry> Entries(ulong first, params ulong[] terms) =>
        [.. terms.Select((t, k) => new Entry { Index = first + (ulong)k, Term = t, Data = new byte[8] })];

    /// <summary>Entries [from, to) whose term equals their index.</summary>
    public static List<Entry> TermEqualsIndex(ulong from, ulong to) =>
        [.. Enumerable.Range(0, (int)(to - from)).Select(k => new Entry { Index = from + (ulong)k, Term = from + (ulong)k, Data = new byte[8] })];

    public static Snapshot Snap(ulong index, ulong term) => new() { Metadata = new SnapshotMetadata { Index = index, Term = term } };

    /// <summary>A log whose broken invariants surface as exceptions, as the node turns them into.</summary>
    public static RaftLog NewLog(IRaftStorage storage, ulong maxNextEntsSize = ulong.MaxValue) =>
        new(storage, maxNextEntsSize, message => throw new RaftInvariantException(message));

    /// <summary>Storage holding a snapshot at (index, term) and nothing after it.</summary>
    public static InMemoryRaftStorage StorageFromSnapshot(ulong index, ulong term)
    {
        var storage = new InMemoryRaftStorage();
        storage.ApplySnapshot(Snap(index, term));
        return storage;
    }

    public static ulong[] Indexes(IEnumerable<Entry> entries) => [.. entries.Select(e => e.Index)];

    public static (ulong Index, ulong Term)[] Ids(IEnumerable<Entry> entries) => [.. entries.Select(e => (e.Index, e.Term))];
}
