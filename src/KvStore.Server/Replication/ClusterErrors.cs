using Grpc.Core;

namespace KvStore.Server.Replication;

/// <summary>etcd errors used only by the replicated path (the rest are in <see cref="EtcdErrors"/>).</summary>
public static class ClusterErrors
{
    /// <summary>etcd's ErrTimeoutDueToLeaderFail: the proposal timed out while no leader was known.</summary>
    public static readonly EtcdError TimeoutLeaderFail = new(StatusCode.Unavailable, "etcdserver: request timed out, possibly due to previous leader failure");

    /// <summary>etcd's ErrTimeoutLeaderTransfer.</summary>
    public static readonly EtcdError TimeoutLeaderTransfer = new(StatusCode.Unavailable, "etcdserver: request timed out, leader transfer took too long");

    /// <summary>etcd's ErrLearnerNotReady for reads served by a learner.</summary>
    public static readonly EtcdError NotSupportedForLearner = new(StatusCode.Unavailable, "etcdserver: rpc not supported for learner");

    /// <summary>etcd's ErrIDRemoved.</summary>
    public static readonly EtcdError MemberRemoved = new(StatusCode.FailedPrecondition, "etcdserver: Member permanently removed");
}
