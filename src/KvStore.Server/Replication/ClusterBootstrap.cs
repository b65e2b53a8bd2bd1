using System.Globalization;
using Grpc.Core;
using KvStore.Raft.Wire;
using KvStore.Server.Identity;
using KvStore.Server.Options;
using KvStore.Server.Peer;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Replication;

/// <summary>
/// Joining a running cluster (--initial-cluster-state existing), as etcd does: at the first start the member asks the
/// peers listed in --initial-cluster (itself excluded) for the cluster's ID and member list over the peer port
/// (<c>kvstore.raft.PeerCluster/GetClusterInfo</c>, <see cref="ClusterInfoService"/>), takes as its own member ID the one
/// of the member whose peer URLs equal its --initial-advertise-peer-urls (the member `etcdctl member add` created), and
/// stores both in the data directory. Raft then starts with no bootstrap voters and learns everything from the leader.
/// A restarted member uses what it stored and never asks again.
/// </summary>
public static class ClusterBootstrap
{
    /// <summary>Rounds over all peers before giving up (etcd retries its peers for a few seconds too).</summary>
    public const int DefaultAttempts = 10;

    /// <summary>
    /// The identity of this member: the stored one when there is one; for a first start with
    /// <c>--initial-cluster-state existing</c> the one learned from the running cluster (stored before returning);
    /// otherwise the one the flags imply (a new cluster, stored).
    /// </summary>
    /// <exception cref="ClusterJoinException">The running cluster could not be reached, or has no member with this
    /// member's advertised peer URLs.</exception>
    public static async Task<MemberIdentity> LoadOrJoinAsync(
        string memberDir,
        ServerOptions options,
        PeerTlsOptions? tls,
        ILogger logger,
        CancellationToken cancellationToken,
        int attempts = DefaultAttempts,
        TimeSpan? retryDelay = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        if (MemberIdentity.TryLoad(memberDir, options) is { } stored)
        {
            return stored;
        }

        if (options.InitialClusterState != "existing")
        {
            return MemberIdentity.Save(memberDir, MemberIdentity.FromOptions(options));
        }

        var identity = await JoinAsync(options, tls, logger, cancellationToken, attempts, retryDelay ?? TimeSpan.FromMilliseconds(500));
        return MemberIdentity.Save(memberDir, identity);
    }

    /// <summary>Asks the running cluster who this member is (nothing is stored).</summary>
    public static async Task<MemberIdentity> JoinAsync(
        ServerOptions options,
        PeerTlsOptions? tls,
        ILogger logger,
        CancellationToken cancellationToken,
        int attempts = DefaultAttempts,
        TimeSpan? retryDelay = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var own = OwnPeerUrls(options);
        var cluster = InitialCluster.Parse(options.InitialCluster);
        var peerUrls = cluster
            .Where(pair => pair.Key != options.Name)
            .SelectMany(pair => pair.Value)
            .Where(url => !own.Contains(url, StringComparer.Ordinal))
            .Distinct(StringComparer.Ordinal)
            .Select(url => new Uri(url))
            .ToList();
        if (peerUrls.Count == 0)
        {
            throw new ClusterJoinException(
                $"--initial-cluster-state=existing needs the running cluster's members in --initial-cluster (it lists only this member, {options.Name}={string.Join(',', own)})");
        }

        var info = await FetchAsync(peerUrls, tls, logger, cancellationToken, attempts, retryDelay ?? TimeSpan.FromMilliseconds(500));
        var self = info.Members.FirstOrDefault(m => m.PeerUrls.Order(StringComparer.Ordinal).SequenceEqual(own, StringComparer.Ordinal));
        if (self is null)
        {
            throw new ClusterJoinException(
                $"error validating peerURLs {Describe(info)}: no member has peer URLs {string.Join(',', own)} (--initial-advertise-peer-urls); " +
                $"add this member to the cluster first (etcdctl member add {options.Name} --peer-urls={string.Join(',', own)}), or fix --initial-advertise-peer-urls");
        }

        var others = info.Members.Where(m => m.Id != self.Id).ToList();
        if (others.Count + 1 != cluster.Count)
        {
            BootstrapLog.MemberCountDiffers(logger, cluster.Count, info.Members.Count, Describe(info));
        }

        BootstrapLog.Joined(logger, EtcdLog.Id(self.Id), EtcdLog.Id(info.ClusterId), Describe(info));
        return new MemberIdentity(
            self.Id,
            info.ClusterId,
            options.Name,
            own,
            options.AdvertiseClientUrls.Select(FlagParser.UrlText).ToArray())
        {
            Peers = [.. others.Select(m => new KnownPeer(m.Id, m.Name, [.. m.PeerUrls], m.IsLearner))],
        };
    }

    /// <summary>The peer URLs this member is known by: --initial-advertise-peer-urls (etcd matches those), sorted.</summary>
    public static string[] OwnPeerUrls(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return [.. options.InitialAdvertisePeerUrls.Select(FlagParser.UrlText).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];
    }

    /// <summary>Asks each peer in turn, <paramref name="attempts"/> rounds with <paramref name="retryDelay"/> between
    /// rounds; the first answer with a non-empty member table wins.</summary>
    public static async Task<ClusterInfoResponse> FetchAsync(
        IReadOnlyList<Uri> peerUrls,
        PeerTlsOptions? tls,
        ILogger logger,
        CancellationToken cancellationToken,
        int attempts = DefaultAttempts,
        TimeSpan? retryDelay = null)
    {
        ArgumentNullException.ThrowIfNull(peerUrls);
        var errors = new List<string>();
        var transportOptions = new PeerTransportOptions { ClusterId = 0, LocalMemberId = 0, SnapshotDirectory = string.Empty, Tls = tls };
        for (var attempt = 1; attempt <= Math.Max(1, attempts); attempt++)
        {
            errors.Clear();
            foreach (var url in peerUrls)
            {
                try
                {
                    using var channel = PeerChannelFactory.Create(url, transportOptions);
                    var client = new PeerCluster.PeerClusterClient(channel);
                    var info = await client.GetClusterInfoAsync(
                        new ClusterInfoRequest(),
                        deadline: DateTime.UtcNow + transportOptions.DialTimeout + TimeSpan.FromSeconds(1),
                        cancellationToken: cancellationToken);
                    if (info.ClusterId != 0 && info.Members.Count > 0)
                    {
                        return info;
                    }

                    errors.Add($"{FlagParser.UrlText(url)}: the member does not know its cluster yet");
                }
                catch (RpcException e) when (!cancellationToken.IsCancellationRequested)
                {
                    errors.Add($"{FlagParser.UrlText(url)}: {e.Status.StatusCode} {e.Status.Detail}");
                }
            }

            BootstrapLog.PeersUnavailable(logger, attempt, attempts, string.Join("; ", errors));
            if (attempt < attempts)
            {
                await Task.Delay(retryDelay ?? TimeSpan.FromMilliseconds(500), cancellationToken);
            }
        }

        throw new ClusterJoinException(
            $"cannot fetch cluster info from peer urls {string.Join(',', peerUrls.Select(FlagParser.UrlText))} (--initial-cluster-state=existing): {string.Join("; ", errors)}");
    }

    private static string Describe(ClusterInfoResponse info) =>
        string.Create(
            CultureInfo.InvariantCulture,
            $"{{ClusterID:{EtcdLog.Id(info.ClusterId)} Members:[{string.Join(' ', info.Members.Select(m => $"&{{ID:{EtcdLog.Id(m.Id)} Name:{m.Name} PeerURLs:[{string.Join(' ', m.PeerUrls)}] IsLearner:{(m.IsLearner ? "true" : "false")}}}"))}]}}");

}

/// <summary>Joining a running cluster failed; the message says why (the member exits with it).</summary>
public sealed class ClusterJoinException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ClusterJoinException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public ClusterJoinException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public ClusterJoinException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>Log messages of joining a running cluster. Event IDs 1450-1459.</summary>
internal static partial class BootstrapLog
{
    [LoggerMessage(EventId = 1450, Level = LogLevel.Warning, Message = "fetching cluster info for --initial-cluster-state=existing (round {Attempt}/{Attempts}) failed: {Errors}")]
    public static partial void PeersUnavailable(ILogger logger, int attempt, int attempts, string errors);

    [LoggerMessage(EventId = 1451, Level = LogLevel.Warning, Message = "--initial-cluster lists {Local} members but the running cluster has {Remote}: {Cluster}")]
    public static partial void MemberCountDiffers(ILogger logger, int local, int remote, string cluster);

    [LoggerMessage(EventId = 1452, Level = LogLevel.Information, Message = "joining the running cluster as member {MemberId} of cluster {ClusterId}: {Cluster}")]
    public static partial void Joined(ILogger logger, string memberId, string clusterId, string cluster);
}
