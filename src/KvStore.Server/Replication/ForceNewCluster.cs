using KvStore.Raft;
using KvStore.Storage.Raft;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Replication;

/// <summary>
/// --force-new-cluster: before raft starts, the member's log is rewritten so that it is the only member: one
/// RemoveNode conf change per other member (the last snapshot's membership plus the conf changes after it) is
/// appended after the last entry, at the current term, and everything up to them is marked committed. Unlike etcd,
/// which drops the entries after its recorded commit index, every entry the member holds is kept: the commit index a
/// follower records lags the leader's, so the last writes the old cluster committed (and acknowledged) are often
/// past it, while keeping an entry that was never committed is only what raft allows anyway (an unacknowledged
/// write may still take effect). Raft applies them through the first Ready like
/// any committed entry, which removes the members from the raft configuration and from the member table, so a single
/// voter is left and elects itself; new members are then added with `member add`.
/// </summary>
public static partial class ForceNewCluster
{
    /// <summary>Rewrites the log; returns the IDs removed. A member without raft state (a first start) is left as is.</summary>
    public static async Task<IReadOnlyList<ulong>> RewriteAsync(RaftLogStore log, ulong self, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(log);
        ArgumentNullException.ThrowIfNull(logger);
        var (hardState, confState) = log.InitialState();
        if (hardState.IsEmpty && log.LastIndex() == 0)
        {
            return [];
        }

        var last = log.LastIndex();
        var members = new SortedSet<ulong>(confState.Voters.Concat(confState.Learners));
        var first = log.FirstIndex();
        if (last >= first && log.Entries(first, last + 1, ulong.MaxValue, out var entries) == KvStore.Raft.Storage.StorageStatus.Ok)
        {
            foreach (var entry in entries.Where(e => e.Type == EntryType.ConfChange))
            {
                var change = ConfChange.Decode(entry.Data.Span);
                if (change.Type == ConfChangeType.RemoveNode)
                {
                    members.Remove(change.NodeId);
                }
                else
                {
                    members.Add(change.NodeId);
                }
            }
        }

        if (!members.Contains(self))
        {
            throw new InvalidOperationException(
                $"--force-new-cluster: this member ({EtcdLog.Id(self)}) is not a member of the cluster at index {last} (members {string.Join(',', members.Select(EtcdLog.Id))})");
        }

        var others = members.Where(id => id != self).ToList();
        var removals = others.Select((id, i) => new Entry
        {
            Index = last + 1 + (ulong)i,
            Term = hardState.Term,
            Type = EntryType.ConfChange,
            Data = new ConfChange { Type = ConfChangeType.RemoveNode, NodeId = id }.Encode(),
        }).ToList();
        log.Save(hardState with { Commit = last + (ulong)removals.Count }, removals, null);
        await log.SyncAsync();
        Log.Forced(logger, EtcdLog.Id(self), hardState.Commit, last, string.Join(',', others.Select(EtcdLog.Id)));
        return others;
    }


    /// <summary>Event IDs 1710-1719.</summary>
    private static partial class Log
    {
        [LoggerMessage(EventId = 1710, Level = LogLevel.Warning, Message = "--force-new-cluster: member {MemberId} restarts as the only member (recorded commit index {Commit}, keeping the log through {Last}), removing members [{Removed}]. Start without the flag from now on.")]
        public static partial void Forced(ILogger logger, string memberId, ulong commit, ulong last, string removed);
    }
}
