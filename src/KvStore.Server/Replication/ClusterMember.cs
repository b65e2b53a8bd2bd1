using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace KvStore.Server.Replication;

/// <summary>
/// One member as the cluster records it (etcd's membership.Member): stored in the MVCC meta bucket
/// <see cref="BucketName"/> under its 8-byte big-endian id, as JSON, by the entry that changed it, so membership is in
/// the same durable unit as the data and travels inside state-machine snapshots.
/// </summary>
public sealed record ClusterMember(
    [property: JsonPropertyName("id")] ulong Id,
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("peerURLs")] IReadOnlyList<string> PeerUrls,
    [property: JsonPropertyName("clientURLs")] IReadOnlyList<string> ClientUrls,
    [property: JsonPropertyName("isLearner")] bool IsLearner)
{
    /// <summary>The meta bucket holding members.</summary>
    public const string BucketName = "members";

    /// <summary>The meta key of a member.</summary>
    public static byte[] Key(ulong id)
    {
        var key = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(key, id);
        return key;
    }

    /// <summary>JSON encoding (meta value and conf-change context).</summary>
    public byte[] Encode() => JsonSerializer.SerializeToUtf8Bytes(this, MembershipJson.Default.ClusterMember);

    /// <summary>Decodes <see cref="Encode"/>'s output.</summary>
    public static ClusterMember Decode(ReadOnlySpan<byte> data) =>
        JsonSerializer.Deserialize(data, MembershipJson.Default.ClusterMember) ?? throw new InvalidDataException("empty member record");
}

/// <summary>
/// The context carried by a raft conf-change entry: who asked (member and request id, to wake the waiting call on the
/// proposing member only) and the member being added or changed.
/// </summary>
public sealed record ConfChangeContext(
    [property: JsonPropertyName("proposer")] ulong Proposer,
    [property: JsonPropertyName("requestId")] ulong RequestId,
    [property: JsonPropertyName("member")] ClusterMember? Member)
{
    /// <summary>JSON encoding.</summary>
    public byte[] Encode() => JsonSerializer.SerializeToUtf8Bytes(this, MembershipJson.Default.ConfChangeContext);

    /// <summary>Decodes <see cref="Encode"/>'s output; null for an empty context (bootstrap entries carry none).</summary>
    public static ConfChangeContext? Decode(ReadOnlySpan<byte> data) =>
        data.IsEmpty ? null : JsonSerializer.Deserialize(data, MembershipJson.Default.ConfChangeContext);
}

/// <summary>Source-generated JSON for the member records (no reflection at run time, so native AOT builds serve them too);
/// the same bytes as the reflection-based serializer with default options.</summary>
[JsonSerializable(typeof(ClusterMember))]
[JsonSerializable(typeof(ConfChangeContext))]
internal sealed partial class MembershipJson : JsonSerializerContext;
