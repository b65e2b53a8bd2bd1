using System.Collections.Frozen;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace KvStore.Server.Auth;

/// <summary>
/// With auth enabled, the maintenance and membership RPCs etcd reserves for root (defragment, snapshot, hash, move
/// leader, member add/remove/update/promote) need a caller holding the root role. Checked here, before the service
/// runs, so the list of admin-only methods is in one place. (Auth management is checked when applied; see AuthStore.)
/// Registered for the two services these methods belong to (Maintenance, Cluster), not for every call.
/// </summary>
public sealed class AdminOnlyInterceptor(RequestAuthenticator auth) : Interceptor
{
    private static readonly FrozenSet<string> AdminMethods = new[]
    {
        "/etcdserverpb.Maintenance/Defragment",
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/MoveLeader",
        "/etcdserverpb.Cluster/MemberAdd",
        "/etcdserverpb.Cluster/MemberRemove",
        "/etcdserverpb.Cluster/MemberUpdate",
        "/etcdserverpb.Cluster/MemberPromote",
    }.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>True for the methods only root may call while auth is enabled.</summary>
    public static bool IsAdminOnly(string method) => AdminMethods.Contains(method);

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(continuation);
        Check(context);
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(continuation);
        Check(context);
        return continuation(request, responseStream, context);
    }

    private void Check(ServerCallContext context)
    {
        if (IsAdminOnly(context.Method))
        {
            auth.RequireAdmin(context);
        }
    }
}
