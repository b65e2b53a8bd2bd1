using Grpc.Core;
using Grpc.Core.Interceptors;

namespace KvStore.Server.Api;

/// <summary>
/// Turns the bare Unimplemented status of a generated base method into one that says which service is missing and why.
/// </summary>
/// <remarks>
/// A generated base method throws as it is called, so its call's task is already faulted when the continuation
/// returns; any other call's task is passed on as it is, without an await (and its allocation) on every request.
/// </remarks>
public sealed class UnimplementedInterceptor : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        var call = continuation(request, context);
        return IsBaseMethodFailure(call) ? Task.FromException<TResponse>(Describe(context.Method)) : call;
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        var call = continuation(request, responseStream, context);
        return IsBaseMethodFailure(call) ? Task.FromException(Describe(context.Method)) : call;
    }

    private static bool IsBaseMethodFailure(Task call) =>
        call.IsFaulted && call.Exception!.InnerException is RpcException { StatusCode: StatusCode.Unimplemented } e && e is not EtcdException;

    private static EtcdException Describe(string method)
    {
        var service = method.TrimStart('/').Split('/')[0];
        var why = service switch
        {
            "etcdserverpb.Maintenance" => "not supported by a single kvstore member",
            _ => "not supported by kvstore yet",
        };
        return new EtcdException(StatusCode.Unimplemented, $"kvstore: {method} is not implemented yet ({why})");
    }
}
