using Google.Protobuf;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// The lease side of the applier (implemented by the lessor). All members are called on the apply thread, in commit order.
/// </summary>
public interface ILeaseApplier
{
    /// <summary>True if the lease is currently granted (not revoked or expired-and-revoked).</summary>
    bool Exists(long leaseId);

    /// <summary>A key was put inside a write txn; attach it to <paramref name="newLease"/> and detach it from <paramref name="oldLease"/> (0 = none).</summary>
    void OnPut(byte[] key, long oldLease, long newLease);

    /// <summary>A key attached to <paramref name="lease"/> was deleted.</summary>
    void OnDelete(byte[] key, long lease);

    /// <summary>Applies a committed LeaseGrant; returns the response (header is filled by the caller).</summary>
    IMessage ApplyGrant(Etcdserverpb.LeaseGrantRequest request, MvccWriteTxn txn);

    /// <summary>Applies a committed LeaseRevoke: deletes attached keys through <paramref name="txn"/> and persists the change.</summary>
    IMessage ApplyRevoke(Etcdserverpb.LeaseRevokeRequest request, MvccWriteTxn txn);

    /// <summary>Applies a committed LeaseCheckpoint: records (and persists) each known lease's remaining TTL.</summary>
    void ApplyCheckpoint(Etcdserverpb.LeaseCheckpointRequest request, MvccWriteTxn txn);
}
