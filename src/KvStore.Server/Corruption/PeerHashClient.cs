using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Peer;
using KvStore.Server.Replication;

namespace KvStore.Server.Corruption;

/// <summary>
/// Asks the other members for their HashKV at a revision, over their client URLs (etcd's leader asks its peers the
/// same way). A member that does not answer on any of its URLs in time, or refuses the revision (compacted past it),
/// is left out of the answers.
/// </summary>
public sealed class PeerHashClient(Membership membership, ulong localMemberId, PeerTransportOptions transport) : IPeerHashSource
{
    /// <summary>The answers of every other member that answered.</summary>
    public async Task<IReadOnlyList<MemberHash>> AskPeersAsync(long revision, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var peers = membership.Members.Where(m => m.Id != localMemberId).ToList();
        var answers = await Task.WhenAll(peers.Select(p => AskAsync(p, revision, timeout, cancellationToken))).ConfigureAwait(false);
        return [.. answers.OfType<MemberHash>()];
    }

    private async Task<MemberHash?> AskAsync(ClusterMember member, long revision, TimeSpan timeout, CancellationToken cancellationToken)
    {
        foreach (var url in member.ClientUrls)
        {
            try
            {
                using var channel = PeerChannelFactory.Create(new Uri(url), transport);
                var client = new Maintenance.MaintenanceClient(channel);
                var response = await client.HashKVAsync(
                    new HashKVRequest { Revision = revision },
                    deadline: DateTime.UtcNow + timeout,
                    cancellationToken: cancellationToken).ConfigureAwait(false);
                return new MemberHash(member.Id, response.Header.Revision, response.CompactRevision, response.Hash);
            }
            catch (RpcException) when (!cancellationToken.IsCancellationRequested)
            {
                // Unreachable on this URL, or compacted past the revision: try the next URL, else skip the member.
            }
            catch (UriFormatException)
            {
                // A URL that is not one: try the next.
            }
        }

        return null;
    }

    /// <summary>
    /// Asks the other members, one after the other, to raise <paramref name="corruptMember"/>'s CORRUPT alarm (the
    /// member asked proposes it through the log); true once one accepted.
    /// </summary>
    public async Task<bool> RaiseCorruptAsync(ulong corruptMember, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var request = new AlarmRequest { Action = AlarmRequest.Types.AlarmAction.Activate, MemberID = corruptMember, Alarm = AlarmType.Corrupt };
        foreach (var url in membership.Members.Where(m => m.Id != localMemberId).SelectMany(m => m.ClientUrls))
        {
            try
            {
                using var channel = PeerChannelFactory.Create(new Uri(url), transport);
                await new Maintenance.MaintenanceClient(channel).AlarmAsync(request, deadline: DateTime.UtcNow + timeout, cancellationToken: cancellationToken).ConfigureAwait(false);
                return true;
            }
            catch (RpcException) when (!cancellationToken.IsCancellationRequested)
            {
                // No leader behind this member, or unreachable: try the next.
            }
            catch (UriFormatException)
            {
                // A URL that is not one: try the next.
            }
        }

        return false;
    }
}
