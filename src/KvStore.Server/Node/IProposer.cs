using Google.Protobuf;
using KvStore.Internal;

namespace KvStore.Server.Node;

/// <summary>
/// Puts a state-changing request into the log. The returned task completes with the apply result (the etcdserverpb
/// response message, header included) once the entry is durable and applied, or faults with an
/// <see cref="Grpc.Core.RpcException"/> carrying etcd's code and message. The request id is assigned by the proposer.
/// </summary>
public interface IProposer
{
    /// <summary>Proposes <paramref name="request"/> and waits for its result.</summary>
    Task<IMessage> ProposeAsync(InternalRequest request, CancellationToken cancellationToken);
}
