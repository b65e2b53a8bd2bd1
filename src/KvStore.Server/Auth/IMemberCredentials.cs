using KvStore.Internal;

namespace KvStore.Server.Auth;

/// <summary>
/// The auth context of requests a member proposes on its own behalf (lease expiry): root at the auth revision the
/// member sees when it proposes, as etcd's member acts with root's token. Apply then judges these entries by the same
/// rule as a client's (a revision made old by an auth change meanwhile refuses the entry; the member proposes again).
/// </summary>
public interface IMemberCredentials
{
    /// <summary>A header naming root and the current auth revision.</summary>
    InternalRequestHeader MemberHeader();
}
