using Grpc.Core;
using Grpc.Core.Interceptors;

namespace KvStore.Server.Api;

/// <summary>Auth: mapped so that clients get Unimplemented (with a message) instead of a missing route.</summary>
public sealed class AuthService : Etcdserverpb.Auth.AuthBase;

/// <summary>
/// Turns the bare Unimplemented status of a generated base method into one that says which service is missing and why,
/// and logs unexpected failures.
/// </summary>
public sealed class UnimplementedInterceptor : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            return await continuation(request, context);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented && e is not EtcdException)
        {
            throw Describe(context.Method);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            await continuation(request, responseStream, context);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented && e is not EtcdException)
        {
            throw Describe(context.Method);
        }
    }

    private static EtcdException Describe(string method)
    {
        var service = method.TrimStart('/').Split('/')[0];
        var why = service switch
        {
            "etcdserverpb.Auth" => "authentication arrives with the auth issue",
            "etcdserverpb.Maintenance" => "not supported by a single kvstore member",
            _ => "not supported by kvstore yet",
        };
        return new EtcdException(StatusCode.Unimplemented, $"kvstore: {method} is not implemented yet ({why})");
    }
}
