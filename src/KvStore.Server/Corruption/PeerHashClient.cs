using Etcdserverpb;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.Server.Peer;
using KvStore.Server.Replication;

namespace KvStore.Server.Corruption;

/// <summary>
/// Asks the other members for their HashKV at a revision, over their client URLs (etcd's leader asks its peers the
/// same way). A member that does not answer on any of its URLs in time, or refuses the revision (compacted past it),
/// is left out of the answers.
/// </summary>
public sealed class PeerHashClient(RaftHost host, PeerTransport transport) : IPeerHashSource
{
    /// <summary>The answers of every other member that answered.</summary>
    public async Task<IReadOnlyList<MemberHash>> AskPeersAsync(long revision, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var peers = host.Membership.Members.Where(m => m.Id != host.MemberId).ToList();
        var answers = await Task.WhenAll(peers.Select(p => AskAsync(p, revision, timeout, cancellationToken))).ConfigureAwait(false);
        return [.. answers.OfType<MemberHash>()];
    }

    private async Task<MemberHash?> AskAsync(ClusterMember member, long revision, TimeSpan timeout, CancellationToken cancellationToken)
    {
        foreach (var url in member.ClientUrls)
        {
            try
            {
                using var channel = PeerChannelFactory.Create(new Uri(url), transport.Options);
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
}
