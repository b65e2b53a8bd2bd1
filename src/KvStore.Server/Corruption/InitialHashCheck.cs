using KvStore.Server.Options;
using KvStore.Server.Peer;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Corruption;

/// <summary>
/// --experimental-initial-corrupt-check: before this member serves anything, compare its HashKV with the peers' at its
/// own revision (<see cref="HashComparison.Initial"/>). Peers that do not answer, or cannot hash that revision, are
/// skipped. On a mismatch the member logs both hashes, asks a peer to raise its CORRUPT alarm (through the log, when a
/// leader is reachable), and refuses to start.
/// </summary>
public static partial class InitialHashCheck
{
    /// <summary>True if no peer that answered holds different data; false if this member must not serve.</summary>
    public static async Task<bool> PassesAsync(MvccStore store, ulong memberId, ServerOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(options);
        // The member table as this member last applied it (empty on a first start: then there is nothing to compare).
        var membership = new Membership();
        membership.Load(store);
        var transport = new PeerTransportOptions { ClusterId = 0, LocalMemberId = memberId, SnapshotDirectory = string.Empty, Tls = ReplicationServiceCollectionExtensions.ClientTls(options, logger) };
        var peers = new PeerHashClient(membership, memberId, transport);
        var timeout = TimeSpan.FromSeconds(5) + TimeSpan.FromMilliseconds(2 * options.ElectionTimeoutMs);

        var hash = store.HashKV(0);
        var local = new MemberHash(memberId, hash.Revision, hash.CompactRevision, hash.Hash);
        var answers = await peers.AskPeersAsync(local.Revision, timeout, CancellationToken.None).ConfigureAwait(false);
        var mismatches = HashComparison.Initial(local, answers);
        Checked(logger, EtcdLog.Id(memberId), local.Revision, local.Hash, answers.Count, membership.Members.Count(m => m.Id != memberId));
        if (mismatches.Count == 0)
        {
            return true;
        }

        foreach (var mismatch in mismatches)
        {
            Mismatch(logger, EtcdLog.Id(memberId), EtcdLog.Id(mismatch.MemberId), mismatch.Revision, mismatch.LocalHash, mismatch.PeerHash);
        }

        var raised = await peers.RaiseCorruptAsync(memberId, timeout, CancellationToken.None).ConfigureAwait(false);
        Refused(logger, EtcdLog.Id(memberId), raised ? "raised" : "could not be raised (no leader reachable)");
        return false;
    }

    [LoggerMessage(EventId = 1732, Level = LogLevel.Information, Message = "initial corruption check: member {MemberId} hash {Hash} at revision {Revision}; {Answered} of {Peers} peers answered")]
    private static partial void Checked(ILogger logger, string memberId, long revision, uint hash, int answered, int peers);

    [LoggerMessage(EventId = 1733, Level = LogLevel.Error, Message = "initial corruption check: member {MemberId} differs from peer {PeerId} at revision {Revision}: local hash {LocalHash}, peer hash {PeerHash}")]
    private static partial void Mismatch(ILogger logger, string memberId, string peerId, long revision, uint localHash, uint peerHash);

    [LoggerMessage(EventId = 1734, Level = LogLevel.Error, Message = "{MemberId} found data inconsistency with peers; refusing to serve (CORRUPT alarm {Alarm})")]
    private static partial void Refused(ILogger logger, string memberId, string alarm);
}
