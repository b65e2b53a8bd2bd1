namespace KvStore.Server.Node;

/// <summary>
/// The barrier before a linearizable read: it completes once this member has applied everything the leader had
/// committed when it was called (etcd's ReadIndex), or faults with etcd's timeout and "server stopped" errors.
/// </summary>
public interface ILinearizableReads
{
    /// <summary>Waits until a read served from this member's store now sees every write acknowledged before the call.</summary>
    ValueTask WaitForReadIndexAsync(CancellationToken cancellationToken);
}
