using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Identity;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Api;

/// <summary>etcd's Cluster service for a single member: MemberList answers; membership changes arrive with Raft.</summary>
public sealed class ClusterService : Cluster.ClusterBase
{
    private readonly MemberIdentity _identity;
    private readonly HeaderFactory _headers;
    private readonly MvccStore _store;

    public ClusterService(MemberIdentity identity, HeaderFactory headers, MvccStore store)
    {
        _identity = identity;
        _headers = headers;
        _store = store;
    }

    public override Task<MemberListResponse> MemberList(MemberListRequest request, ServerCallContext context)
    {
        var member = new Member { ID = _identity.MemberId, Name = _identity.Name, IsLearner = false };
        member.PeerURLs.AddRange(_identity.PeerUrls);
        member.ClientURLs.AddRange(_identity.ClientUrls);
        var response = new MemberListResponse { Header = _headers.Create(_store.CurrentRevision) };
        response.Members.Add(member);
        return Task.FromResult(response);
    }

    public override Task<MemberAddResponse> MemberAdd(MemberAddRequest request, ServerCallContext context) =>
        throw EtcdErrors.MembershipNotSupported.Exception();

    public override Task<MemberRemoveResponse> MemberRemove(MemberRemoveRequest request, ServerCallContext context) =>
        throw EtcdErrors.MembershipNotSupported.Exception();

    public override Task<MemberUpdateResponse> MemberUpdate(MemberUpdateRequest request, ServerCallContext context) =>
        throw EtcdErrors.MembershipNotSupported.Exception();

    public override Task<MemberPromoteResponse> MemberPromote(MemberPromoteRequest request, ServerCallContext context) =>
        throw EtcdErrors.MembershipNotSupported.Exception();
}
