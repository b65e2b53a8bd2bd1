using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Google.Protobuf;
using KvStore.Server.Lease;
using KvStore.Server.Replication;
using KvStore.Storage.EtcdSnapshot;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Backup;

/// <summary>
/// Our meta buckets in etcd's encoding and back. Leases: 8-byte ID → leasepb.Lease (ours: TTL and checkpointed
/// remaining TTL). Members: etcd keys them by hex ID with its member JSON. Other buckets (alarms, auth) keep etcd's
/// names and encodings in our store too, so they pass through unchanged. Coming in from a snapshot, the membership
/// buckets (members, members_removed) and the cluster version are dropped: a restore starts a new cluster with the
/// membership given on its command line, as etcd's restore does.
/// </summary>
public sealed class EtcdMetaMapper : IEtcdMetaMapper
{
    /// <summary>The one instance (stateless).</summary>
    public static readonly EtcdMetaMapper Instance = new();

    private static readonly HashSet<string> DroppedOnImport = new(StringComparer.Ordinal) { ClusterMember.BucketName, "members_removed", "cluster" };

    /// <inheritdoc/>
    public IEnumerable<MetaRecord> ToEtcd(MetaRecord record)
    {
        switch (record.Bucket)
        {
            case Lessor.MetaBucket:
                var (id, ttl, remaining) = Lessor.DecodeRecord(record.Key, record.Value);
                yield return record with { Value = new Leasepb.Lease { ID = id, TTL = ttl, RemainingTTL = remaining }.ToByteArray() };
                break;
            case ClusterMember.BucketName:
                var member = ClusterMember.Decode(record.Value);
                var etcdMember = new EtcdMember(member.Id, member.PeerUrls, member.IsLearner ? true : null, member.Name.Length == 0 ? null : member.Name,
                    member.ClientUrls.Count == 0 ? null : member.ClientUrls);
                yield return new MetaRecord(record.Bucket, System.Text.Encoding.ASCII.GetBytes(member.Id.ToString("x", CultureInfo.InvariantCulture)),
                    JsonSerializer.SerializeToUtf8Bytes(etcdMember, EtcdMemberJson.Default.EtcdMember));
                break;
            default:
                yield return record;
                break;
        }
    }

    /// <inheritdoc/>
    public IEnumerable<MetaRecord> FromEtcd(MetaRecord record)
    {
        if (DroppedOnImport.Contains(record.Bucket))
        {
            yield break;
        }

        if (record.Bucket != Lessor.MetaBucket)
        {
            yield return record;
            yield break;
        }

        Leasepb.Lease lease;
        try
        {
            lease = Leasepb.Lease.Parser.ParseFrom(record.Value);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"lease record {Convert.ToHexString(record.Key)} is not a leasepb.Lease: {e.Message}", e);
        }

        if (record.Key.Length != 8 || BinaryPrimitives.ReadInt64BigEndian(record.Key) != lease.ID)
        {
            throw new InvalidDataException($"lease record key {Convert.ToHexString(record.Key)} does not match lease ID {lease.ID:x}");
        }

        yield return record with { Value = Lessor.EncodeValue(lease.TTL, lease.RemainingTTL) };
    }

    /// <summary>etcd's membership.Member JSON: id, then raft attributes, then attributes, empty ones left out.</summary>
    internal sealed record EtcdMember(
        [property: JsonPropertyName("id")] ulong Id,
        [property: JsonPropertyName("peerURLs")] IReadOnlyList<string> PeerUrls,
        [property: JsonPropertyName("isLearner"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] bool? IsLearner,
        [property: JsonPropertyName("name"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Name,
        [property: JsonPropertyName("clientURLs"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<string>? ClientUrls);
}

/// <summary>Source-generated JSON for <see cref="EtcdMetaMapper.EtcdMember"/>.</summary>
[JsonSerializable(typeof(EtcdMetaMapper.EtcdMember))]
internal sealed partial class EtcdMemberJson : JsonSerializerContext;
