using Grpc.Net.Client;
using KvStore.EndToEnd.Cluster;

namespace KvStore.EndToEnd.Faults;

/// <summary>
/// The workload's own gRPC channel per member, apart from <see cref="ClusterMember.Channel"/> (which the cluster
/// helpers use to wait for a restarted member): a channel that hit a dead member backs off before reconnecting, and
/// that backoff must neither delay the harness nor outlast the member's restart by long. A member's client URL
/// stays the same across restarts, so one channel serves every incarnation.
/// </summary>
public sealed class WorkloadChannels : IDisposable
{
    private readonly Dictionary<string, GrpcChannel> _channels;

    public WorkloadChannels(IEnumerable<ClusterMember> members) =>
        _channels = members.ToDictionary(m => m.Name, m => m.CreateChannel(new GrpcChannelOptions
        {
            InitialReconnectBackoff = TimeSpan.FromMilliseconds(100),
            MaxReconnectBackoff = TimeSpan.FromMilliseconds(500),
        }));

    public GrpcChannel For(ClusterMember m) => _channels[m.Name];

    public void Dispose()
    {
        foreach (var c in _channels.Values)
        {
            c.Dispose();
        }
    }
}
