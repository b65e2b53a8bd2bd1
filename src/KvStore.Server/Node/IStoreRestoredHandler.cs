using KvStore.Storage.Mvcc;

namespace KvStore.Server.Node;

/// <summary>
/// State derived from the store (leases, watchers) that must be rebuilt when a snapshot from the leader replaces the
/// store's contents. The replication code calls every registered handler after the install, without knowing what
/// they are.
/// </summary>
public interface IStoreRestoredHandler
{
    /// <summary>The store now holds the snapshot's state; rebuild from it.</summary>
    void OnStoreRestored(MvccStore store);
}
