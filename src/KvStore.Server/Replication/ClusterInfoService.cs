using Grpc.AspNetCore.Server;
using Grpc.Core;
using KvStore.Raft.Wire;
using KvStore.Server.Identity;
using KvStore.Server.Peer;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace KvStore.Server.Replication;

/// <summary>
/// <c>kvstore.raft.PeerCluster</c>: tells a member that is joining (--initial-cluster-state existing, see
/// <see cref="ClusterBootstrap"/>) the cluster ID and the member table as of this member's applied index (etcd's
/// <c>GET /members</c> on the peer port). Served on the peer listener only (<see cref="MapClusterInfo"/>).
/// </summary>
public sealed class ClusterInfoService : PeerCluster.PeerClusterBase
{
    private readonly RaftHost _host;
    private readonly MemberIdentity _identity;

    /// <summary>Creates the service.</summary>
    public ClusterInfoService(RaftHost host, MemberIdentity identity)
    {
        _host = host;
        _identity = identity;
    }

    /// <summary>Maps the service so that it answers only connections for which <paramref name="isPeerConnection"/> is
    /// true (decided by the local port, never the Host header); elsewhere it looks like an unknown service.</summary>
    public static GrpcServiceEndpointConventionBuilder MapClusterInfo(IEndpointRouteBuilder endpoints, Func<HttpContext, bool> isPeerConnection) =>
        endpoints.MapGrpcServiceOnPeerPort<ClusterInfoService>(isPeerConnection);

    /// <inheritdoc/>
    public override Task<ClusterInfoResponse> GetClusterInfo(ClusterInfoRequest request, ServerCallContext context)
    {
        var members = _host.Membership.Members;
        if (members.Count == 0)
        {
            // Nothing applied yet (a member that is itself joining, or just started): let the caller ask another.
            throw new RpcException(new Status(StatusCode.Unavailable, "this member does not know its cluster's members yet"));
        }

        var response = new ClusterInfoResponse { ClusterId = _identity.ClusterId, MemberId = _identity.MemberId };
        foreach (var member in members)
        {
            var info = new ClusterMemberInfo { Id = member.Id, Name = member.Name, IsLearner = member.IsLearner };
            info.PeerUrls.AddRange(member.PeerUrls);
            info.ClientUrls.AddRange(member.ClientUrls);
            response.Members.Add(info);
        }

        return Task.FromResult(response);
    }
}
