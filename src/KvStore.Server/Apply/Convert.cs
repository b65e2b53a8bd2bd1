using Google.Protobuf;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>Storage types to wire types without copying (stored byte arrays are never mutated).</summary>
internal static class Convert
{
    public static Mvccpb.KeyValue ToProto(KeyValue kv, bool keysOnly = false) => new()
    {
        Key = UnsafeByteOperations.UnsafeWrap(kv.Key),
        Value = keysOnly || kv.Value.Length == 0 ? ByteString.Empty : UnsafeByteOperations.UnsafeWrap(kv.Value),
        CreateRevision = kv.CreateRevision,
        ModRevision = kv.ModRevision,
        Version = kv.Version,
        Lease = kv.Lease,
    };

    /// <summary>etcd's "\0" range end means "every key &gt;= key"; storage takes it as is.</summary>
    public static ReadOnlySpan<byte> Span(ByteString bytes) => bytes.Span;
}
