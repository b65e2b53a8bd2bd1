using System.Runtime.InteropServices;
using Google.Protobuf;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>Storage types to wire types and back without copying (stored byte arrays are never mutated).</summary>
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

    /// <summary>
    /// A bytes field of a request as a stored array: the field's own array when it holds exactly the field (as every
    /// bytes field of a parsed message does), a copy otherwise. Neither the request nor the store writes to it.
    /// </summary>
    public static byte[] ToStored(ByteString field) =>
        MemoryMarshal.TryGetArray(field.Memory, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : field.ToByteArray();

    /// <summary>etcd's "\0" range end means "every key &gt;= key"; storage takes it as is.</summary>
    public static ReadOnlySpan<byte> Span(ByteString bytes) => bytes.Span;
}
