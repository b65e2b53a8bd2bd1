using Grpc.Core;

namespace KvStore.Server.Contract;

/// <summary>
/// An error etcd defines (status code + exact message). It is an <see cref="RpcException"/>, so a gRPC handler may
/// simply let it propagate and the client sees etcd's status. Create instances from <see cref="EtcdErrors"/>.
/// </summary>
public sealed class EtcdException : RpcException
{
    public EtcdException(StatusCode code, string message)
        : base(new Status(code, message), message)
    {
    }

    /// <summary>etcd's gRPC status code for this error.</summary>
    public StatusCode Code => StatusCode;

    /// <summary>etcd's message, e.g. "etcdserver: requested lease not found".</summary>
    public string Detail => Status.Detail;
}

/// <summary>One of etcd's errors as a value; <see cref="Exception"/> makes a fresh exception to throw.</summary>
/// <param name="Code">gRPC status code.</param>
/// <param name="Message">etcd's exact message.</param>
public sealed record EtcdError(StatusCode Code, string Message)
{
    /// <summary>A new exception carrying this error.</summary>
    public EtcdException Exception() => new(Code, Message);
}
