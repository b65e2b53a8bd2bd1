using Microsoft.Extensions.Logging;

namespace KvStore.Server.Replication;

/// <summary>Log messages of the raft host. Event IDs 1400-1499.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1400, Level = LogLevel.Information, Message = "raft started: member {LocalMemberId}, term {Term}, commit {Commit}, applied {Applied}, last index {LastIndex}, members {Conf}, bootstrap voters [{Bootstrap}]")]
    public static partial void Started(ILogger logger, string localMemberId, ulong term, ulong commit, ulong applied, ulong lastIndex, string conf, string bootstrap);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Warning, Message = "{Voters} voting members: quorum is {Quorum}, so the cluster tolerates {Tolerated} failed member(s), no more than with {Fewer} voters; an odd number of voters is advised (docs/cluster.md)")]
    public static partial void EvenVoters(ILogger logger, int voters, int quorum, int tolerated, int fewer);

    [LoggerMessage(EventId = 1403, Level = LogLevel.Debug, Message = "membership changed at index {Index}: {Change} member {MemberId} ({Name}); voters={Voters} learners={Learners}")]
    public static partial void MembershipChanged(ILogger logger, ulong index, string change, string memberId, string name, int voters, int learners);

    [LoggerMessage(EventId = 1404, Level = LogLevel.Information, Message = "snapshot at applied index {Index}: store checkpointed, raft log compacted through {CompactIndex}")]
    public static partial void Snapshotted(ILogger logger, ulong index, ulong compactIndex);

    [LoggerMessage(EventId = 1415, Level = LogLevel.Information, Message = "store checkpointed at index {Index}, past the raft log's last index {LastIndex} (an installed snapshot held entries the log has not received yet): no raft snapshot marker")]
    public static partial void CheckpointAheadOfLog(ILogger logger, ulong index, ulong lastIndex);

    [LoggerMessage(EventId = 1405, Level = LogLevel.Information, Message = "sending snapshot {Index}/{Term} (store at index {StoreIndex}, {Bytes} bytes) to {Peer}")]
    public static partial void SendingSnapshot(ILogger logger, ulong index, ulong term, ulong storeIndex, long bytes, string peer);

    [LoggerMessage(EventId = 1406, Level = LogLevel.Warning, Message = "creating the snapshot for {Peer} failed")]
    public static partial void SnapshotCreateFailed(ILogger logger, string peer, Exception exception);

    [LoggerMessage(EventId = 1407, Level = LogLevel.Information, Message = "installing snapshot {Index}/{Term} from {File}")]
    public static partial void InstallingSnapshot(ILogger logger, ulong index, ulong term, string file);

    [LoggerMessage(EventId = 1408, Level = LogLevel.Information, Message = "installed snapshot: store at index {Index}, revision {Revision}")]
    public static partial void InstalledSnapshot(ILogger logger, ulong index, long revision);

    [LoggerMessage(EventId = 1409, Level = LogLevel.Critical, Message = "raft loop failed; the member stops")]
    public static partial void LoopFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1410, Level = LogLevel.Error, Message = "applying entry {Index} failed")]
    public static partial void ApplyFailed(ILogger logger, ulong index, Exception exception);

    [LoggerMessage(EventId = 1411, Level = LogLevel.Warning, Message = "this member ({MemberId}) was removed from the cluster at index {Index}; stopping")]
    public static partial void RemovedSelf(ILogger logger, string memberId, ulong index);

    [LoggerMessage(EventId = 1412, Level = LogLevel.Information, Message = "stopping the raft host")]
    public static partial void Stopping(ILogger logger);

    [LoggerMessage(EventId = 1414, Level = LogLevel.Warning, Message = "the shutdown timeout ran out before the raft loops ended; skipping the final checkpoint (the WAL holds every acknowledged write)")]
    public static partial void StopTimedOut(ILogger logger);
}
