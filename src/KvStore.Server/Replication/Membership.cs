using System.Collections.Immutable;
using KvStore.Raft;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Replication;

/// <summary>
/// The member table as of the applied index: written only by the apply loop (after the entry's store txn committed),
/// read from any thread as an immutable snapshot.
/// </summary>
public sealed class Membership
{
    private ImmutableSortedDictionary<ulong, ClusterMember> _members = ImmutableSortedDictionary<ulong, ClusterMember>.Empty;

    /// <summary>Every member, ordered by id (etcd's member list order).</summary>
    public IReadOnlyList<ClusterMember> Members => [.. Volatile.Read(ref _members).Values];

    /// <summary>The member with <paramref name="id"/>, or null.</summary>
    public ClusterMember? Get(ulong id) => Volatile.Read(ref _members).GetValueOrDefault(id);

    /// <summary>Number of voting members.</summary>
    public int VoterCount => Volatile.Read(ref _members).Values.Count(m => !m.IsLearner);

    /// <summary>The raft configuration the table implies.</summary>
    public ConfState ToConfState()
    {
        var members = Volatile.Read(ref _members).Values;
        return new ConfState
        {
            Voters = [.. members.Where(m => !m.IsLearner).Select(m => m.Id)],
            Learners = [.. members.Where(m => m.IsLearner).Select(m => m.Id)],
        };
    }

    /// <summary>Replaces the table with what <paramref name="store"/> holds (start, snapshot install).</summary>
    public void Load(MvccStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        var builder = ImmutableSortedDictionary.CreateBuilder<ulong, ClusterMember>();
        foreach (var (_, value) in store.ReadMeta(ClusterMember.BucketName))
        {
            var member = ClusterMember.Decode(value);
            builder[member.Id] = member;
        }

        Volatile.Write(ref _members, builder.ToImmutable());
    }

    /// <summary>Adds or replaces a member (apply loop only).</summary>
    internal void Set(ClusterMember member) => Volatile.Write(ref _members, Volatile.Read(ref _members).SetItem(member.Id, member));

    /// <summary>Removes a member (apply loop only).</summary>
    internal void Remove(ulong id) => Volatile.Write(ref _members, Volatile.Read(ref _members).Remove(id));
}
