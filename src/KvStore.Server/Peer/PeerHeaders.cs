using System.Globalization;
using Grpc.Core;

namespace KvStore.Server.Peer;

/// <summary>The gRPC metadata that names the sender of every peer call (see protos/kvstore/raft.proto).</summary>
internal static class PeerHeaders
{
    public const string ClusterId = "kvstore-cluster-id";
    public const string FromMemberId = "kvstore-from-member-id";
    public const string ToMemberId = "kvstore-to-member-id";

    public static Metadata Create(ulong clusterId, ulong from, ulong to) => new()
    {
        { ClusterId, Format(clusterId) },
        { FromMemberId, Format(from) },
        { ToMemberId, Format(to) },
    };

    public static string Format(ulong id) => id.ToString("x16", CultureInfo.InvariantCulture);

    /// <summary>Reads an ID header; false when it is missing or malformed.</summary>
    public static bool TryGet(Metadata headers, string key, out ulong id)
    {
        id = 0;
        var value = headers.GetValue(key);
        return value is not null && ulong.TryParse(value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out id);
    }
}
