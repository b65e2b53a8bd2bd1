using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Http;
using KvStore.Server.Identity;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Peer;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Raft;
using KvStore.Storage.Wal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Cluster;

/// <summary>Bounded waits: a hang fails the test instead of blocking the run.</summary>
internal static class Bounded
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Waits for <paramref name="condition"/>, re-checking whenever <paramref name="member"/> applies something or a leader changes.</summary>
    public static async Task UntilAsync(Func<bool> condition, string what, params ClusterMemberHost[] members)
    {
        using var timeout = new CancellationTokenSource(Timeout);
        try
        {
            while (true)
            {
                // Subscribe first, then check: a change between the two still wakes us. No sleeping.
                var next = Task.WhenAny(members.Select(m => m.Host.NextChangeAsync(timeout.Token)));
                if (condition())
                {
                    return;
                }

                await await next;
            }
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            throw new TimeoutException($"timed out after {Timeout.TotalSeconds} s waiting for: {what}");
        }
    }
}

/// <summary>One member: real storage in a temp dir, real RaftHost and PeerTransport on a loopback Kestrel.</summary>
internal sealed class ClusterMemberHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly WriteAheadLog _wal;
    private bool _stopped;

    private ClusterMemberHost(WebApplication app, WriteAheadLog wal, RaftHost host, NodeState state, MemberIdentity identity, string name, int port, string dataDir)
    {
        _app = app;
        _wal = wal;
        Host = host;
        State = state;
        Identity = identity;
        Name = name;
        Port = port;
        DataDir = dataDir;
    }

    public RaftHost Host { get; }

    public NodeState State { get; }

    public MemberIdentity Identity { get; }

    public string Name { get; }

    public int Port { get; }

    public string DataDir { get; }

    public string PeerUrl => $"http://127.0.0.1:{Port}";

    public ulong Id => Identity.MemberId;

    public MvccStore Store => Host.Store;

    public bool IsLeader => State.LeaderId == Id;

    public static async Task<ClusterMemberHost> StartAsync(
        string name,
        string dataDir,
        int port,
        string initialCluster,
        string state = "new",
        ulong snapshotCount = 100_000,
        ulong clusterId = 0,
        ulong catchUpEntries = RaftHost.SnapshotCatchUpEntries,
        long electionTimeoutMs = 200,
        bool initialElectionTickAdvance = true)
    {
        var options = new ServerOptions
        {
            Name = name,
            DataDir = dataDir,
            InitialCluster = initialCluster,
            InitialClusterState = state,
            InitialClusterToken = "test-token",
            HeartbeatIntervalMs = 20,
            ElectionTimeoutMs = electionTimeoutMs,
            InitialElectionTickAdvance = initialElectionTickAdvance,
            SnapshotCount = snapshotCount,
            AdvertiseClientUrls = [new Uri($"http://127.0.0.1:{port + 10000}")],
            InitialAdvertisePeerUrls = [new Uri($"http://127.0.0.1:{port}")],
        };

        // As ServerHost: the stored identity, else (existing) the running cluster's answer, else the flags'.
        var identity = await ClusterBootstrap.LoadOrJoinAsync(dataDir, options, tls: null, NullLogger.Instance, CancellationToken.None, attempts: 3, retryDelay: TimeSpan.FromMilliseconds(100));
        if (clusterId != 0)
        {
            identity = identity with { ClusterId = clusterId };
        }

        Directory.CreateDirectory(dataDir);
        var wal = WriteAheadLog.Open(Path.Combine(dataDir, "wal"), NullLogger.Instance);
        var storeOptions = new MvccStoreOptions
        {
            DataDirectory = Path.Combine(dataDir, "kv"),
            MemorySizeBits = 22,
            PageSizeBits = 16,
            IndexBuckets = 1 << 12,
            LogHoldsEveryWrite = wal.Replay().HoldsEveryEntry,
        };
        var store = MvccStore.Open(storeOptions, NullLogger.Instance);
        var raftLog = RaftLogStore.Open(wal, NullLogger.Instance);
        var nodeState = new NodeState();

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, l => l.Protocols = HttpProtocols.Http2));
        builder.Services.Configure<Microsoft.Extensions.Hosting.HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        builder.Services.AddSingleton(identity);
        builder.Services.AddSingleton(sp => new RaftHost(
            options,
            identity,
            store,
            raftLog,
            s => new Applier(s, new NoLeases(), new NoWatch(), new HeaderFactory(identity, nodeState), new AlarmState(s), new KvStore.Server.Auth.AuthStore(s), new KvStore.Server.Auth.SimpleTokenProvider(TimeSpan.FromMinutes(5), TimeProvider.System)),
            Path.Combine(dataDir, "snap", "outgoing"),
            nodeState,
            new KvStore.Server.Monitoring.ServerMetrics(),
            () => sp.GetRequiredService<PeerTransport>(),
            NullLogger<RaftHost>.Instance,
            lifetime: null)
        {
            CatchUpEntries = catchUpEntries,
        });
        builder.Services.AddPeerTransport(
            _ => new PeerTransportOptions
            {
                ClusterId = identity.ClusterId,
                LocalMemberId = identity.MemberId,
                SnapshotDirectory = Path.Combine(dataDir, "snap", "incoming"),
                MinBackoff = TimeSpan.FromMilliseconds(20),
                MaxBackoff = TimeSpan.FromMilliseconds(200),
            },
            sp => sp.GetRequiredService<RaftHost>());
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RaftHost>());
        var app = builder.Build();
        app.MapPeerTransport(_ => true);
        ClusterInfoService.MapClusterInfo(app, _ => true);
        await app.StartAsync();
        return new ClusterMemberHost(app, wal, app.Services.GetRequiredService<RaftHost>(), nodeState, identity, name, port, dataDir);
    }

    /// <summary>Puts <paramref name="key"/> = <paramref name="value"/> through this member.</summary>
    public async Task<long> PutAsync(string key, string value)
    {
        using var timeout = new CancellationTokenSource(Bounded.Timeout);
        var response = (Etcdserverpb.PutResponse)await Host.ProposeAsync(
            new InternalRequest { Put = new Etcdserverpb.PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) } },
            timeout.Token);
        return response.Header.Revision;
    }

    /// <summary>A linearizable read of <paramref name="key"/> on this member (null when absent).</summary>
    public async Task<string?> GetAsync(string key)
    {
        using var timeout = new CancellationTokenSource(Bounded.Timeout);
        await Host.WaitForReadIndexAsync(timeout.Token);
        return LocalGet(key);
    }

    /// <summary>A serializable (local) read.</summary>
    public string? LocalGet(string key)
    {
        var result = Store.Range(System.Text.Encoding.UTF8.GetBytes(key), [], default);
        return result.Kvs.Count == 0 ? null : System.Text.Encoding.UTF8.GetString(result.Kvs[0].Value);
    }

    public async Task StopAsync()
    {
        if (_stopped)
        {
            return;
        }

        _stopped = true;
        using var timeout = new CancellationTokenSource(Bounded.Timeout);
        await _app.StopAsync(timeout.Token);
        await _app.DisposeAsync();
        Host.Dispose();
        Host.Store.Dispose();
        await _wal.DisposeAsync();
    }

    public ValueTask DisposeAsync() => new(StopAsync());

    private sealed class NoLeases : ILeaseApplier
    {
        public bool Exists(long leaseId) => false;

        public IReadOnlyCollection<byte[]> KeysOf(long leaseId) => [];

        public void OnPut(byte[] key, long oldLease, long newLease)
        {
        }

        public void OnDelete(byte[] key, long lease)
        {
        }

        public IMessage ApplyGrant(Etcdserverpb.LeaseGrantRequest request, MvccWriteTxn txn) => throw EtcdErrors.LeaseNotFound.Exception();

        public IMessage ApplyRevoke(Etcdserverpb.LeaseRevokeRequest request, MvccWriteTxn txn) => throw EtcdErrors.LeaseNotFound.Exception();

        public void ApplyCheckpoint(Etcdserverpb.LeaseCheckpointRequest request, MvccWriteTxn txn)
        {
        }
    }

    private sealed class NoWatch : IWatchEventSink
    {
        public void OnCommitted(long revision, IReadOnlyList<MvccEvent> events)
        {
        }
    }
}

/// <summary>An in-process cluster of <see cref="ClusterMemberHost"/>s in a temp directory.</summary>
internal sealed class TestCluster : IAsyncDisposable
{
    private readonly string _root;

    private TestCluster(string root, List<ClusterMemberHost> members, string initialCluster)
    {
        _root = root;
        Members = members;
        InitialCluster = initialCluster;
    }

    public List<ClusterMemberHost> Members { get; }

    public string InitialCluster { get; }

    public string Root => _root;

    public static async Task<TestCluster> StartAsync(
        int size,
        ulong snapshotCount = 100_000,
        ulong catchUpEntries = RaftHost.SnapshotCatchUpEntries,
        long electionTimeoutMs = 200,
        bool initialElectionTickAdvance = true)
    {
        var root = Path.Combine(Path.GetTempPath(), "kvstore-cluster-" + Guid.NewGuid().ToString("N")[..8]);
        var ports = LoopbackPorts.Take(size);
        var initial = string.Join(',', ports.Select((p, i) => $"m{i}=http://127.0.0.1:{p}"));
        var members = await Task.WhenAll(ports.Select((p, i) =>
            ClusterMemberHost.StartAsync(
                $"m{i}",
                Path.Combine(root, $"m{i}"),
                p,
                initial,
                snapshotCount: snapshotCount,
                catchUpEntries: catchUpEntries,
                electionTimeoutMs: electionTimeoutMs,
                initialElectionTickAdvance: initialElectionTickAdvance)));
        var cluster = new TestCluster(root, [.. members], initial);
        await cluster.WaitForLeaderAsync();
        return cluster;
    }

    /// <summary>Waits until every running member agrees on one running leader; returns it.</summary>
    public async Task<ClusterMemberHost> WaitForLeaderAsync(IReadOnlyList<ClusterMemberHost>? among = null)
    {
        var members = (among ?? Members).ToArray();
        ClusterMemberHost? leader = null;
        await Bounded.UntilAsync(
            () =>
            {
                var id = members[0].State.LeaderId;
                leader = members.FirstOrDefault(m => m.Id == id);
                return leader is not null && members.All(m => m.State.LeaderId == id);
            },
            "a leader known to every member",
            members);
        return leader!;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var member in Members)
        {
            await member.DisposeAsync();
        }

        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }
}
