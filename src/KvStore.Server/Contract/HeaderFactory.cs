using Etcdserverpb;
using KvStore.Server.Identity;
using KvStore.Server.Node;

namespace KvStore.Server.Contract;

/// <summary>Fills etcd's ResponseHeader: cluster_id, member_id, raft_term and the revision the response reflects.</summary>
public sealed class HeaderFactory
{
    private readonly MemberIdentity _identity;
    private readonly NodeState _state;

    public HeaderFactory(MemberIdentity identity, NodeState state)
    {
        _identity = identity;
        _state = state;
    }

    /// <summary>A header for a response at <paramref name="revision"/>.</summary>
    public ResponseHeader Create(long revision) => new()
    {
        ClusterId = _identity.ClusterId,
        MemberId = _identity.MemberId,
        Revision = revision,
        RaftTerm = _state.Term,
    };
}
