using KvStore.Storage.Mvcc;

namespace KvStore.Server.Lease;

/// <summary>
/// The part of a write transaction the lessor uses while applying a grant or revoke. In production this is
/// <see cref="MvccLeaseTxn"/> over <see cref="MvccWriteTxn"/>; tests use an in-memory double.
/// </summary>
public interface ILeaseTxn
{
    /// <summary>The main revision this transaction writes at (current revision + 1).</summary>
    long Revision { get; }

    /// <summary>True once this transaction changed a key (so it will bump the revision when committed).</summary>
    bool HasKeyChanges { get; }

    /// <summary>Deletes one key (no-op when absent).</summary>
    void DeleteKey(byte[] key);

    /// <summary>Writes a record into a durable side table (same atomic unit as the key changes).</summary>
    void PutMeta(string bucket, byte[] key, byte[] value);

    /// <summary>Removes a record from a durable side table.</summary>
    void DeleteMeta(string bucket, byte[] key);
}

/// <summary>What the lessor reads when it rebuilds its state at start.</summary>
public interface ILeaseRecoverySource
{
    /// <summary>The persisted lease records (bucket "lease").</summary>
    IEnumerable<KeyValuePair<byte[], byte[]>> ReadLeaseRecords();

    /// <summary>Every live key that carries a lease, with that lease.</summary>
    IEnumerable<(byte[] Key, long Lease)> ReadLeasedKeys();
}

/// <summary><see cref="ILeaseTxn"/> over the storage engine's write transaction.</summary>
public sealed class MvccLeaseTxn(MvccWriteTxn txn) : ILeaseTxn
{
    /// <inheritdoc/>
    public long Revision => txn.Revision;

    /// <inheritdoc/>
    public bool HasKeyChanges => txn.Changes.Count > 0;

    /// <inheritdoc/>
    public void DeleteKey(byte[] key) => txn.DeleteRange(key, ReadOnlySpan<byte>.Empty);

    /// <inheritdoc/>
    public void PutMeta(string bucket, byte[] key, byte[] value) => txn.PutMeta(bucket, key, value);

    /// <inheritdoc/>
    public void DeleteMeta(string bucket, byte[] key) => txn.DeleteMeta(bucket, key);
}

/// <summary><see cref="ILeaseRecoverySource"/> over the opened store.</summary>
public sealed class MvccLeaseRecoverySource(MvccStore store) : ILeaseRecoverySource
{
    /// <inheritdoc/>
    public IEnumerable<KeyValuePair<byte[], byte[]>> ReadLeaseRecords() => store.ReadMeta(Lessor.MetaBucket);

    /// <inheritdoc/>
    public IEnumerable<(byte[] Key, long Lease)> ReadLeasedKeys() => store.LeasedKeys();
}
