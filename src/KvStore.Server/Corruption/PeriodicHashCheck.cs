using Etcdserverpb;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Corruption;

/// <summary>The other members' HashKV answers at a revision (members that did not answer are left out).</summary>
public interface IPeerHashSource
{
    /// <summary>Asks every other member for HashKV at <paramref name="revision"/>.</summary>
    Task<IReadOnlyList<MemberHash>> AskPeersAsync(long revision, TimeSpan timeout, CancellationToken cancellationToken);
}

/// <summary>
/// One round of the leader's periodic check: hash the local key space at the current revision, ask the followers for
/// HashKV at that same revision, hash the local key space again (<see cref="HashComparison.LeaderSelf"/>: unchanged
/// revisions with a changed hash mean the leader's own store is damaged), compare the followers
/// (<see cref="HashComparison.Periodic"/>), then log every inconsistent member
/// with the revision and both hashes and propose its CORRUPT alarm through the log, so every member refuses writes.
/// </summary>
public sealed partial class PeriodicHashCheck(
    MvccStore store, ulong memberId, IPeerHashSource peers, IProposer proposer, AlarmState alarms, TimeSpan peerTimeout, ILogger logger)
{
    /// <summary>Runs one comparison; returns the members found inconsistent.</summary>
    public async Task<IReadOnlyList<HashMismatch>> RunAsync(CancellationToken cancellationToken)
    {
        var before = store.HashKV(0);
        if (before.Error != MvccError.None)
        {
            return [];
        }

        var local = new MemberHash(memberId, before.Revision, before.CompactRevision, before.Hash);
        var answers = await peers.AskPeersAsync(before.Revision, peerTimeout, cancellationToken).ConfigureAwait(false);
        var after = store.HashKV(0);
        var compactNow = store.CompactRevision == 0 ? -1 : store.CompactRevision;
        var mismatches = new List<HashMismatch>();
        if (after.Error == MvccError.None
            && HashComparison.LeaderSelf(local, new MemberHash(memberId, after.Revision, after.CompactRevision, after.Hash)) is { } self)
        {
            SelfMismatch(logger, EtcdLog.Id(memberId), self.Revision, self.LocalHash, self.PeerHash);
            mismatches.Add(self);
            await RaiseCorruptAsync(memberId, cancellationToken).ConfigureAwait(false);
        }

        foreach (var mismatch in HashComparison.Periodic(local, store.CurrentRevision, compactNow, answers))
        {
            Mismatch(logger, EtcdLog.Id(mismatch.MemberId), EtcdLog.Id(memberId), mismatch.Revision, mismatch.LocalHash, mismatch.PeerHash, mismatch.Reason);
            mismatches.Add(mismatch);
            await RaiseCorruptAsync(mismatch.MemberId, cancellationToken).ConfigureAwait(false);
        }

        return mismatches;
    }

    private async Task RaiseCorruptAsync(ulong corruptMember, CancellationToken cancellationToken)
    {
        if (alarms.IsActive(corruptMember, AlarmType.Corrupt))
        {
            return;
        }

        try
        {
            var alarm = new AlarmRequest { Action = AlarmRequest.Types.AlarmAction.Activate, MemberID = corruptMember, Alarm = AlarmType.Corrupt };
            await proposer.ProposeAsync(new InternalRequest { Alarm = alarm }, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            // Not raised this time (leadership lost, timeout): the next round finds the mismatch again.
            RaiseFailed(logger, EtcdLog.Id(corruptMember), e.Status.Detail);
        }
    }

    [LoggerMessage(EventId = 1730, Level = LogLevel.Error, Message = "corruption check: member {MemberId} is inconsistent with leader {LeaderId} at revision {Revision}: leader hash {LeaderHash}, member hash {MemberHash} ({Reason}); raising the CORRUPT alarm")]
    private static partial void Mismatch(ILogger logger, string memberId, string leaderId, long revision, uint leaderHash, uint memberHash, string reason);

    [LoggerMessage(EventId = 1735, Level = LogLevel.Error, Message = "corruption check: leader {LeaderId}'s own hash changed at revision {Revision} with no write in between: hash {HashBefore}, then {HashAfter}; raising the CORRUPT alarm for itself")]
    private static partial void SelfMismatch(ILogger logger, string leaderId, long revision, uint hashBefore, uint hashAfter);

    [LoggerMessage(EventId = 1731, Level = LogLevel.Warning, Message = "corruption check: proposing the CORRUPT alarm for member {MemberId} failed: {Detail}")]
    private static partial void RaiseFailed(ILogger logger, string memberId, string detail);
}
