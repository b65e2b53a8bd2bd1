using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Replication;

namespace KvStore.Server.Api;

/// <summary>
/// etcd's Cluster service over the replicated member table (docs/cluster.md): MemberList reads the table as of the
/// applied index; Add/Remove/Update/Promote go through Raft and answer once the change is applied on this member.
/// </summary>
public sealed class ClusterService : Etcdserverpb.Cluster.ClusterBase
{
    private readonly MembershipCoordinator _members;
    private readonly HeaderFactory _headers;

    public ClusterService(MembershipCoordinator members, HeaderFactory headers)
    {
        _members = members;
        _headers = headers;
    }

    public override Task<MemberListResponse> MemberList(MemberListRequest request, ServerCallContext context)
    {
        // etcd fills cluster responses' headers without a revision.
        var response = new MemberListResponse { Header = _headers.Create(0) };
        response.Members.AddRange(Members());
        return Task.FromResult(response);
    }

    public override async Task<MemberAddResponse> MemberAdd(MemberAddRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var urls = ValidUrls(request.PeerURLs);
        var added = await _members.AddMemberAsync(urls, request.IsLearner, context.CancellationToken);
        var response = new MemberAddResponse { Header = _headers.Create(0), Member = ToProto(added) };
        response.Members.AddRange(Members());
        return response;
    }

    public override async Task<MemberRemoveResponse> MemberRemove(MemberRemoveRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        await _members.RemoveMemberAsync(request.ID, context.CancellationToken);
        var response = new MemberRemoveResponse { Header = _headers.Create(0) };
        response.Members.AddRange(Members());
        return response;
    }

    public override async Task<MemberUpdateResponse> MemberUpdate(MemberUpdateRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var urls = ValidUrls(request.PeerURLs);
        await _members.UpdateMemberAsync(request.ID, urls, context.CancellationToken);
        var response = new MemberUpdateResponse { Header = _headers.Create(0) };
        response.Members.AddRange(Members());
        return response;
    }

    public override async Task<MemberPromoteResponse> MemberPromote(MemberPromoteRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        await _members.PromoteMemberAsync(request.ID, context.CancellationToken);
        var response = new MemberPromoteResponse { Header = _headers.Create(0) };
        response.Members.AddRange(Members());
        return response;
    }

    private IEnumerable<Member> Members() => _members.Membership.Members.Select(ToProto);

    private static Member ToProto(ClusterMember m)
    {
        var member = new Member { ID = m.Id, Name = m.Name, IsLearner = m.IsLearner };
        member.PeerURLs.AddRange(m.PeerUrls);
        member.ClientURLs.AddRange(m.ClientUrls);
        return member;
    }

    private static List<string> ValidUrls(IEnumerable<string> urls)
    {
        var list = urls.ToList();
        if (list.Count == 0 || list.Any(u => !Uri.TryCreate(u, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Port <= 0))
        {
            throw EtcdErrors.MemberBadUrls.Exception();
        }

        return list;
    }
}
