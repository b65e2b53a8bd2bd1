using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Hosting;
using KvStore.Server.Identity;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Wal;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// One member as the real server builds it (<see cref="ServerHost.Build"/>: the real DI graph, client and peer
/// listeners on loopback), for in-process clusters with a fast election (20 ms heartbeat, 200 ms election timeout).
/// </summary>
internal sealed class FullServer : IAsyncDisposable
{
    private readonly WriteAheadLog _wal;
    private readonly MvccStore _store;
    private bool _stopped;

    private FullServer(WebApplication app, WriteAheadLog wal, MvccStore store, int clientPort)
    {
        App = app;
        ClientPort = clientPort;
        _wal = wal;
        _store = store;
        Host = app.Services.GetRequiredService<RaftHost>();
        State = app.Services.GetRequiredService<Node.NodeState>();
    }

    public WebApplication App { get; }

    public int ClientPort { get; }

    public RaftHost Host { get; }

    public Node.NodeState State { get; }

    /// <summary>
    /// <paramref name="advertisedPeerPort"/>: where the others reach this member (e.g. a gate in front of its peer port);
    /// <paramref name="storage"/>: another data dir, or wrappers around the WAL's and the store's log devices;
    /// <paramref name="configure"/>: changes to the member's flags (e.g. --metrics).
    /// </summary>
    public static async Task<FullServer> StartAsync(
        string root,
        int i,
        int peerPort,
        int clientPort,
        string initialCluster,
        int? advertisedPeerPort = null,
        MemberStorage? storage = null,
        Action<ServerOptions>? configure = null)
    {
        var options = new ServerOptions
        {
            Name = $"s{i}",
            DataDir = storage?.DataDir ?? Path.Combine(root, $"s{i}"),
            InitialCluster = initialCluster,
            InitialClusterState = "new",
            InitialClusterToken = "in-process",
            HeartbeatIntervalMs = 20,
            ElectionTimeoutMs = 200,
            SnapshotCount = 50,
            ListenClientUrls = [new Uri($"http://127.0.0.1:{clientPort}")],
            AdvertiseClientUrls = [new Uri($"http://127.0.0.1:{clientPort}")],
            ListenPeerUrls = [new Uri($"http://127.0.0.1:{peerPort}")],
            InitialAdvertisePeerUrls = [new Uri($"http://127.0.0.1:{advertisedPeerPort ?? peerPort}")],
        };
        configure?.Invoke(options);
        var identity = MemberIdentity.FromOptions(options);
        var memberDir = Path.Combine(options.EffectiveDataDir, "member");
        Directory.CreateDirectory(memberDir);
        var wal = WriteAheadLog.Open(Path.Combine(memberDir, "wal"), NullLogger.Instance, storage?.WrapWalDevice);
        var store = MvccStore.Open(
            new MvccStoreOptions
            {
                DataDirectory = Path.Combine(memberDir, "kv"),
                MemorySizeBits = 22,
                PageSizeBits = 16,
                IndexBuckets = 1 << 12,
                WrapLogDevice = storage?.WrapStoreDevice,
                WrapCheckpointDevice = storage?.WrapStoreCheckpointDevice,
                LogHoldsEveryWrite = wal.Replay().HoldsEveryEntry,
            },
            NullLogger.Instance);
        var app = ServerHost.Build(options, identity, store, wal, Serilog.Core.Logger.None);
        await app.StartAsync();
        return new FullServer(app, wal, store, clientPort);
    }

    /// <summary>The leader, once every one of <paramref name="servers"/> agrees on it.</summary>
    public static async Task<FullServer> WaitLeaderAsync(IReadOnlyList<FullServer> servers)
    {
        using var timeout = Timeout();
        while (true)
        {
            var id = servers[0].Host.Membership.Members.Count > 0 ? servers[0].State.LeaderId : 0;
            var leader = servers.FirstOrDefault(s => s.Host.MemberId == id);
            if (leader is not null && servers.All(s => s.State.LeaderId == id))
            {
                return leader;
            }

            await Task.WhenAny(servers.Select(s => s.Host.NextChangeAsync(timeout.Token)));
            timeout.Token.ThrowIfCancellationRequested();
        }
    }

    public async Task<IMessage> ProposeAsync(InternalRequest request)
    {
        using var timeout = Timeout();
        return await Host.ProposeAsync(request, timeout.Token);
    }

    public async Task<long> PutAsync(string key, string value)
    {
        using var timeout = Timeout();
        var response = (PutResponse)await Host.ProposeAsync(
            new InternalRequest { Put = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) } },
            timeout.Token);
        return response.Header.Revision;
    }

    /// <summary>
    /// Cuts the member's links to its peers, as a dead machine's go with its power: nothing it sends from now on reaches
    /// them. Without this, an abandoned member whose frozen disk writes are later reported done would still send what
    /// waited on them (a vote, an append response) while its restarted self, which never saw those writes, votes again.
    /// </summary>
    public ValueTask CutPeerLinksAsync() => App.Services.GetRequiredService<KvStore.Server.Peer.PeerTransport>().DisposeAsync();

    /// <summary>
    /// Takes the member off the network as a dead machine would leave it: its listeners and peer streams close, its
    /// storage is not closed and nothing is checkpointed. Waits a bounded time for threads stuck on its disks.
    /// </summary>
    public async Task AbandonAsync()
    {
        _stopped = true;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await Task.WhenAny(App.StopAsync(stop.Token), Task.Delay(TimeSpan.FromSeconds(10)));
    }

    public async ValueTask DisposeAsync()
    {
        if (_stopped)
        {
            return;
        }

        _stopped = true;
        using var timeout = Timeout();
        await App.StopAsync(timeout.Token);
        await App.DisposeAsync();
        _store.Dispose();
        await _wal.DisposeAsync();
    }

    private static CancellationTokenSource Timeout() => new(TimeSpan.FromSeconds(30));
}

/// <summary>
/// Test hooks for a member's storage: its data dir, and wrappers around its WAL's and its store's log devices and
/// its store's checkpoint file devices.
/// </summary>
internal sealed record MemberStorage(
    string? DataDir = null,
    Func<FASTER.core.IDevice, FASTER.core.IDevice>? WrapWalDevice = null,
    Func<FASTER.core.IDevice, FASTER.core.IDevice>? WrapStoreDevice = null,
    Func<FASTER.core.IDevice, FASTER.core.IDevice>? WrapStoreCheckpointDevice = null);
