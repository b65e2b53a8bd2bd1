using Grpc.Core;

namespace KvStore.Server.Concurrency;

/// <summary>
/// The errors of etcd's Lock and Election services. etcd builds them on an in-process clientv3, whose errors are plain
/// Go errors by the time the service returns them: clients see gRPC status UNKNOWN with the message, also for the etcd
/// errors of the calls underneath (e.g. "etcdserver: requested lease not found").
/// </summary>
public static class ConcurrencyErrors
{
    public static readonly EtcdError ElectionNotLeader = new(StatusCode.Unknown, "election: not leader");
    public static readonly EtcdError ElectionNoLeader = new(StatusCode.Unknown, "election: no leader");
    public static readonly EtcdError SessionExpired = new(StatusCode.Unknown, "mutex: session is expired");
    public static readonly EtcdError MissingLeaderKey = new(StatusCode.Unknown, "\"leader\" field must be provided");

    /// <summary>Runs <paramref name="call"/> and reports an etcd error from underneath as these services do.</summary>
    public static async Task<T> RelayAsync<T>(Func<Task<T>> call)
    {
        ArgumentNullException.ThrowIfNull(call);
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (EtcdException e) when (e.Code != StatusCode.Unknown)
        {
            throw new EtcdException(StatusCode.Unknown, e.Detail);
        }
    }
}
