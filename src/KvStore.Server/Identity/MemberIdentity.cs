using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using KvStore.Server.Options;
using KvStore.Storage;

namespace KvStore.Server.Identity;

/// <summary>
/// Who this member is: its ID, its cluster's ID, name and URLs. IDs are derived the way etcd derives them for a
/// bootstrapping cluster, so that a member started with the same flags as an etcd member gets the same IDs:
/// member ID = first 8 bytes (big endian) of SHA-1 over the member's sorted peer URLs followed by the cluster token;
/// cluster ID = first 8 bytes of SHA-1 over the sorted member IDs, each as 8 big-endian bytes.
/// The identity is stored in &lt;data-dir&gt;/member/identity.json at the first start; later starts use the stored one.
/// </summary>
public sealed record MemberIdentity(ulong MemberId, ulong ClusterId, string Name, IReadOnlyList<string> PeerUrls, IReadOnlyList<string> ClientUrls)
{
    /// <summary>File name inside &lt;data-dir&gt;/member.</summary>
    public const string FileName = "identity.json";

    /// <summary>
    /// etcd's member ID for a member with these peer URLs in a cluster bootstrapped with this token. A member added at
    /// run time also mixes in the Unix time of the addition (<paramref name="addedAtUnixSeconds"/>), as etcd does, so a
    /// member removed and added again with the same peer URLs gets a new ID.
    /// </summary>
    public static ulong ComputeMemberId(IEnumerable<string> peerUrls, string clusterToken, long? addedAtUnixSeconds = null)
    {
        ArgumentNullException.ThrowIfNull(peerUrls);
        ArgumentNullException.ThrowIfNull(clusterToken);
        var text = new StringBuilder();
        foreach (var url in peerUrls.Order(StringComparer.Ordinal))
        {
            text.Append(url);
        }

        text.Append(clusterToken);
        if (addedAtUnixSeconds is { } seconds)
        {
            text.Append(seconds.ToString(CultureInfo.InvariantCulture));
        }

#pragma warning disable CA5350 // SHA-1 is etcd's ID derivation (compatibility), not a security measure.
        return First8(SHA1.HashData(Encoding.UTF8.GetBytes(text.ToString())));
#pragma warning restore CA5350
    }

    /// <summary>etcd's cluster ID for these member IDs.</summary>
    public static ulong ComputeClusterId(IEnumerable<ulong> memberIds)
    {
        ArgumentNullException.ThrowIfNull(memberIds);
        var ids = memberIds.Order().ToArray();
        var bytes = new byte[8 * ids.Length];
        for (var i = 0; i < ids.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(8 * i), ids[i]);
        }

        #pragma warning disable CA5350 // as above
        return First8(SHA1.HashData(bytes));
#pragma warning restore CA5350
    }

    /// <summary>The identity implied by the flags (for a new cluster).</summary>
    public static MemberIdentity FromOptions(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var cluster = InitialCluster.Parse(options.InitialCluster);
        var memberIds = cluster.Values.Select(urls => ComputeMemberId(urls, options.InitialClusterToken)).ToList();
        var ownUrls = cluster[options.Name];
        return new MemberIdentity(
            ComputeMemberId(ownUrls, options.InitialClusterToken),
            ComputeClusterId(memberIds),
            options.Name,
            ownUrls.Order(StringComparer.Ordinal).ToArray(),
            options.AdvertiseClientUrls.Select(FlagParser.UrlText).ToArray());
    }

    /// <summary>
    /// The other members as a running cluster described them when this member joined it (--initial-cluster-state
    /// existing): whom to connect to before the member table arrives through the log. Empty for a bootstrap member.
    /// </summary>
    public IReadOnlyList<KnownPeer> Peers { get; init; } = [];

    /// <summary>
    /// Loads the identity stored in <paramref name="memberDir"/>, or computes it from the flags and stores it durably.
    /// The stored IDs win over the flags (as in etcd, the data directory decides who a member is); the name and URLs
    /// come from the current flags.
    /// </summary>
    public static MemberIdentity LoadOrCreate(string memberDir, ServerOptions options) =>
        TryLoad(memberDir, options) ?? Save(memberDir, FromOptions(options));

    /// <summary>The identity stored in <paramref name="memberDir"/> (IDs and known peers from the file, name and URLs
    /// from the flags), or null at a first start.</summary>
    public static MemberIdentity? TryLoad(string memberDir, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var path = Path.Combine(memberDir, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        var stored = JsonSerializer.Deserialize(File.ReadAllBytes(path), IdentityJson.Default.StoredIdentity)
            ?? throw new InvalidDataException($"{path} is empty");
        var cluster = InitialCluster.Parse(options.InitialCluster);
        var ownUrls = cluster.TryGetValue(options.Name, out var urls) ? urls.Order(StringComparer.Ordinal).ToArray() : stored.PeerUrls;
        return new MemberIdentity(
            ulong.Parse(stored.MemberId, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            ulong.Parse(stored.ClusterId, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            options.Name,
            ownUrls,
            options.AdvertiseClientUrls.Select(FlagParser.UrlText).ToArray())
        {
            Peers = stored.Peers ?? [],
        };
    }

    /// <summary>Stores <paramref name="identity"/> durably in <paramref name="memberDir"/> (write, fsync, rename, fsync
    /// the directory) and returns it.</summary>
    public static MemberIdentity Save(string memberDir, MemberIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        Directory.CreateDirectory(memberDir);
        var path = Path.Combine(memberDir, FileName);
        var record = new StoredIdentity(
            identity.MemberId.ToString("x16", CultureInfo.InvariantCulture),
            identity.ClusterId.ToString("x16", CultureInfo.InvariantCulture),
            identity.Name,
            identity.PeerUrls.ToArray(),
            identity.Peers.Count == 0 ? null : identity.Peers.ToArray());
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(stream, record, IdentityJson.Default.StoredIdentity);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
        DurableDirectory.Sync(memberDir);
        return identity;
    }

    private static ulong First8(byte[] hash) => BinaryPrimitives.ReadUInt64BigEndian(hash);

    internal sealed record StoredIdentity(string MemberId, string ClusterId, string Name, string[] PeerUrls, KnownPeer[]? Peers = null);
}

/// <summary>Another member as the cluster described it when this member joined (see <see cref="MemberIdentity.Peers"/>).</summary>
public sealed record KnownPeer(ulong Id, string Name, IReadOnlyList<string> PeerUrls, bool IsLearner);

/// <summary>Source-generated JSON for identity.json (no reflection at run time, so native AOT builds read it too).</summary>
[JsonSerializable(typeof(MemberIdentity.StoredIdentity))]
internal sealed partial class IdentityJson : JsonSerializerContext;
