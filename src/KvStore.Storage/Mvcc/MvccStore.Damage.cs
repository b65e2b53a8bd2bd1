using KvStore.Storage.Backend;

namespace KvStore.Storage.Mvcc;

public sealed partial class MvccStore
{
    /// <summary>
    /// Test tooling only (the store-damage tool beside the tests): rewrites the record of <paramref name="key"/>'s latest
    /// revision with <paramref name="value"/>, keeping its revisions, version and lease, without a write txn. The
    /// store's key space then differs from what its log says it applied, which is what the corruption checks must
    /// find. False when the key has no live revision. Persisted by the checkpoint taken on <see cref="Dispose"/>.
    /// </summary>
    internal bool OverwriteLatestValueBypassingLog(byte[] key, byte[] value)
    {
        _txnGate.EnterHolder();
        try
        {
            Revision modified;
            _lock.EnterReadLock();
            try
            {
                var ki = IndexRange(key, []).FirstOrDefault();
                if (ki is null || ki.Generations[^1].IsEmpty)
                {
                    return false;
                }

                modified = ki.Modified;
            }
            finally
            {
                _lock.ExitReadLock();
            }

            Span<byte> rk = stackalloc byte[17];
            WriteRevisionKey(rk, modified);
            if (!FasterBackend.TryRead(_writerSession, rk, out var record) || record[0] != FlagPut)
            {
                return false;
            }

            var kv = KeyValueCodec.Decode(record.AsSpan(1), keysOnly: false);
            var damaged = new byte[1 + KeyValueCodec.MaxSize(kv.Key.Length, value.Length)];
            damaged[0] = FlagPut;
            var length = KeyValueCodec.Encode(damaged.AsSpan(1), kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, value, kv.Lease);
            FasterBackend.Upsert(_writerSession, rk, damaged.AsSpan(0, 1 + length));
            return true;
        }
        finally
        {
            _txnGate.Exit();
        }
    }
}
