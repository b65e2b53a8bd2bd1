using Grpc.Core;
using Grpc.Core.Interceptors;
using KvStore.Server.Node;

namespace KvStore.Server.Replication;

/// <summary>
/// etcd's require-leader check (clientv3.WithRequireLeader sends gRPC metadata <c>hasleader: true</c>): such a call
/// fails at once with "etcdserver: no leader" while this member knows no leader, instead of waiting for one.
/// Long-running watch streams are cancelled by the watch service after three election timeouts without a leader.
/// </summary>
public sealed class RequireLeaderInterceptor(NodeState state) : Interceptor
{
    /// <summary>The metadata key clientv3 sets.</summary>
    public const string MetadataKey = "hasleader";

    /// <inheritdoc/>
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        Check(context);
        return continuation(request, context);
    }

    /// <inheritdoc/>
    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        Check(context);
        return continuation(request, responseStream, context);
    }

    /// <inheritdoc/>
    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        Check(context);
        return continuation(requestStream, responseStream, context);
    }

    private void Check(ServerCallContext context)
    {
        if (state.HasLeader || context?.RequestHeaders is not { } headers)
        {
            return;
        }

        foreach (var entry in headers)
        {
            if (entry.Key == MetadataKey && string.Equals(entry.Value, "true", StringComparison.Ordinal))
            {
                throw EtcdErrors.NoLeader.Exception();
            }
        }
    }
}
