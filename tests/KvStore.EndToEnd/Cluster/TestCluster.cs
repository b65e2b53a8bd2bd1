using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>What one member's Maintenance.Status said.</summary>
public sealed record MemberStatus(ulong MemberId, ulong Leader, ulong RaftTerm, ulong RaftIndex, long Revision, IReadOnlyList<string> Errors, ulong AppliedIndex = 0)
{
    public bool IsLeader => Leader != 0 && Leader == MemberId;

    public override string ToString() =>
        $"id {MemberId:x} leader {Leader:x} term {RaftTerm} index {RaftIndex} rev {Revision}" + (Errors.Count > 0 ? $" errors [{string.Join("; ", Errors)}]" : string.Empty);
}

/// <summary>What `etcdctl endpoint hashkv` said for one member.</summary>
public sealed record MemberHash(long Revision, uint Hash, long CompactRevision);

/// <summary>
/// N members of the server under test (kvstore, or real etcd with KVSTORE_E2E_SERVER=etcd) started with etcd's
/// flags: on free 127.0.0.1 ports, or each inside its own network namespace of a <see cref="PeerNetwork"/>.
/// Heartbeat 100 ms, election timeout 1000 ms. Disposing kills every member it started (by PID), writes each
/// member's output into the test output (shown for failed tests) and removes the data dirs.
/// </summary>
public sealed class TestCluster : IAsyncDisposable
{
    public static readonly TimeSpan ElectionTimeout = TimeSpan.FromMilliseconds(1000);

    /// <summary>etcd's server-side request timeout: 5 s + 2 × election timeout.</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5) + (2 * ElectionTimeout);

    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private static readonly string[] Timing = ["--heartbeat-interval", "100", "--election-timeout", "1000"];

    private readonly ITestOutputHelper _output;
    private readonly string _root;
    private readonly string _etcdctl = Tools.Require("etcdctl", "etcd-client");
    private readonly List<ClusterMember> _members = [];

    private TestCluster(ITestOutputHelper output, IReadOnlyList<string> extraArgs, PeerNetwork? network)
    {
        _output = output;
        ExtraArgs = [.. Timing, .. extraArgs];
        Network = network;
        _root = ServerProcess.CreateTempDir("kvstore-e2e-cluster-");
        Token = "e2e-cluster-" + Path.GetFileName(_root);
    }

    public IReadOnlyList<ClusterMember> Members => _members;

    public IReadOnlyList<string> ExtraArgs { get; }

    public PeerNetwork? Network { get; }

    public string Token { get; }

    public string InitialCluster { get; private set; } = string.Empty;

    public IEnumerable<ClusterMember> Running => _members.Where(m => m.IsRunning);

    /// <summary>Starts <paramref name="size"/> members (state new) and waits until every one answers `endpoint health`.</summary>
    /// <paramref name="memberArgs"/> gives member i flags of its own (kept across restarts).
    public static async Task<TestCluster> StartAsync(
        ITestOutputHelper output, int size, IReadOnlyList<string>? extraArgs = null, PeerNetwork? network = null, string peerScheme = "http",
        Func<int, IReadOnlyList<string>>? memberArgs = null)
    {
        var cluster = new TestCluster(output, extraArgs ?? [], network);
        try
        {
            var ports = network is null ? LoopbackPorts.Take(2 * size) : [];
            for (var i = 0; i < size; i++)
            {
                cluster._members.Add(network is null
                    ? new ClusterMember($"m{i}", "127.0.0.1", ports[2 * i], ports[(2 * i) + 1], cluster.DataDirFor($"m{i}"), null) { PeerScheme = peerScheme }
                    : new ClusterMember($"m{i}", PeerNetwork.Address(i), PeerNetwork.ClientPort, PeerNetwork.PeerPort, cluster.DataDirFor($"m{i}"), network.Namespace(i)) { ClientSockets = network.Clients });
                cluster._members[i].OwnArgs = memberArgs?.Invoke(i) ?? [];
            }

            cluster.InitialCluster = string.Join(',', cluster._members.Select(m => $"{m.Name}={m.PeerUrl}"));
            var sw = Stopwatch.StartNew();
            foreach (var m in cluster._members)
            {
                m.Start(cluster.InitialCluster, "new", cluster.Token, cluster.ExtraArgs);
            }

            await Task.WhenAll(cluster._members.Select(m => cluster.WaitHealthyAsync(m, StartTimeout)));
            output.WriteLine($"{size} members healthy {sw.ElapsedMilliseconds} ms after start ({ServerProcess.ServerPath})");
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    public string DataDirFor(string name) => Path.Combine(_root, name + ".data");

    /// <summary>Starts a stopped member again with its original flags, or with --initial-cluster-state existing.</summary>
    public async Task RestartAsync(ClusterMember m, string state = "existing")
    {
        m.Start(InitialCluster, state, Token, ExtraArgs);
        await WaitHealthyAsync(m, StartTimeout);
    }

    /// <summary>Polls `etcdctl endpoint health` (a linearizable read: needs a leader and a quorum) until it succeeds.</summary>
    public async Task WaitHealthyAsync(ClusterMember m, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        var last = "no answer yet";
        while (sw.Elapsed < timeout)
        {
            m.EnsureRunning("while starting");
            var r = await CtlAsync(m, ["endpoint", "health"], TimeSpan.FromSeconds(2));
            if (r.ExitCode == 0)
            {
                try
                {
                    var status = await StatusAsync(m, TimeSpan.FromSeconds(5));
                    m.Id = status.MemberId;
                    return;
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable)
                {
                    // The member's cached channel may still be backing off from the connection the restart broke.
                    last = e.Status.Detail;
                }
            }
            else
            {
                last = (r.Stdout + r.Stderr).Trim();
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"{m.Name} not healthy {timeout.TotalSeconds} s after start (last: {last})\n{m.LogTail(80)}");
    }

    // ---------------------------------------------------------------- etcdctl

    /// <summary>etcdctl 3.4 (ETCDCTL_API=3) against one member, through `ip netns exec` when it lives in a namespace.</summary>
    public async Task<ProcessResult> CtlAsync(ClusterMember m, IEnumerable<string> args, TimeSpan? commandTimeout = null)
    {
        var timeout = commandTimeout ?? TimeSpan.FromSeconds(15);
        List<string> all =
        [
            "--endpoints", m.Endpoint, "--dial-timeout=3s",
            $"--command-timeout={(int)Math.Ceiling(timeout.TotalMilliseconds)}ms",
            .. args,
        ];
        var env = new Dictionary<string, string> { ["ETCDCTL_API"] = "3" };
        var limit = timeout + TimeSpan.FromSeconds(30);
        return m.Netns is null
            ? await Tools.RunAsync(_etcdctl, all, env: env, timeout: limit)
            : await Tools.RunAsync(Tools.Require("ip", "iproute2"), ["netns", "exec", m.Netns, _etcdctl, .. all], env: env, timeout: limit);
    }

    public async Task<string> CtlOkAsync(ClusterMember m, params string[] args)
    {
        var r = await CtlAsync(m, args);
        r.ExitCode.Should().Be(0, "etcdctl through {0} must succeed:\n{1}", m.Name, r);
        return r.Stdout;
    }

    public async Task<JsonElement> CtlJsonAsync(ClusterMember m, params string[] args)
    {
        var stdout = await CtlOkAsync(m, [.. args, "-w", "json"]);
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.Clone();
    }

    /// <summary>The "Error: ..." line etcdctl printed last (its message for a failed command).</summary>
    public static string ErrorLine(ProcessResult r) =>
        r.Stderr.Split('\n').LastOrDefault(l => l.StartsWith("Error:", StringComparison.Ordinal))?.Trim() ?? r.Stderr.Trim();

    /// <summary>`etcdctl put -w json` through one member: the revision, or the error line.</summary>
    public async Task<(long Revision, string? Error, TimeSpan Took)> CtlPutAsync(ClusterMember m, string key, string value, TimeSpan commandTimeout)
    {
        var sw = Stopwatch.StartNew();
        var r = await CtlAsync(m, ["put", key, value, "-w", "json"], commandTimeout);
        sw.Stop();
        if (r.ExitCode != 0)
        {
            return (0, ErrorLine(r), sw.Elapsed);
        }

        using var doc = JsonDocument.Parse(r.Stdout);
        return (doc.RootElement.GetProperty("header").GetProperty("revision").GetInt64(), null, sw.Elapsed);
    }

    /// <summary>`etcdctl get` (linearizable unless serializable) through one member: key → (value, mod revision), header revision.</summary>
    public async Task<(Dictionary<string, (string Value, long ModRevision)> Kvs, long Revision)> CtlGetAsync(ClusterMember m, string key, bool prefix = false, bool serializable = false)
    {
        List<string> args = ["get", key, "-w", "json"];
        if (prefix)
        {
            args.Add("--prefix");
        }

        if (serializable)
        {
            args.Add("--consistency=s");
        }

        var r = await CtlAsync(m, args);
        r.ExitCode.Should().Be(0, "etcdctl get through {0} must succeed:\n{1}", m.Name, r);
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        var kvs = new Dictionary<string, (string, long)>();
        if (root.TryGetProperty("kvs", out var arr))
        {
            foreach (var kv in arr.EnumerateArray())
            {
                kvs[EtcdJson.Str(kv.GetProperty("key"))] = (
                    kv.TryGetProperty("value", out var v) ? EtcdJson.Str(v) : string.Empty,
                    kv.GetProperty("mod_revision").GetInt64());
            }
        }

        return (kvs, root.GetProperty("header").GetProperty("revision").GetInt64());
    }

    public async Task<MemberHash> HashKvAsync(ClusterMember m)
    {
        var json = await CtlJsonAsync(m, "endpoint", "hashkv");
        var h = json[0].GetProperty("HashKV");
        return new MemberHash(
            h.GetProperty("header").GetProperty("revision").GetInt64(),
            h.GetProperty("hash").GetUInt32(),
            h.TryGetProperty("compact_revision", out var c) ? c.GetInt64() : 0);
    }

    public async Task<IReadOnlyList<ListedMember>> MemberListAsync(ClusterMember m)
    {
        var json = await CtlJsonAsync(m, "member", "list");
        return [.. json.GetProperty("members").EnumerateArray().Select(ListedMember.FromJson)];
    }

    // ---------------------------------------------------------------- status, leader, convergence

    /// <summary>Maintenance.Status: raw gRPC on the host loopback (no retries), `etcdctl endpoint status` in a namespace.</summary>
    public async Task<MemberStatus> StatusAsync(ClusterMember m, TimeSpan timeout)
    {
        if (m.Netns is null)
        {
            var s = await new Maintenance.MaintenanceClient(m.Channel).StatusAsync(new StatusRequest(), deadline: DateTime.UtcNow + timeout);
            return new MemberStatus(s.Header.MemberId, s.Leader, s.RaftTerm, s.RaftIndex, s.Header.Revision, [.. s.Errors], s.RaftAppliedIndex);
        }

        var r = await CtlAsync(m, ["endpoint", "status", "-w", "json"], timeout);
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"endpoint status through {m.Name}: {ErrorLine(r)}");
        }

        using var doc = JsonDocument.Parse(r.Stdout);
        var st = doc.RootElement[0].GetProperty("Status");
        return new MemberStatus(
            st.GetProperty("header").GetProperty("member_id").GetUInt64(),
            st.TryGetProperty("leader", out var l) ? l.GetUInt64() : 0,
            st.TryGetProperty("raftTerm", out var t) ? t.GetUInt64() : 0,
            st.TryGetProperty("raftIndex", out var i) ? i.GetUInt64() : 0,
            st.GetProperty("header").TryGetProperty("revision", out var rev) ? rev.GetInt64() : 0,
            st.TryGetProperty("errors", out var e) ? [.. e.EnumerateArray().Select(x => x.GetString() ?? string.Empty)] : [],
            st.TryGetProperty("raftAppliedIndex", out var a) ? a.GetUInt64() : 0);
    }

    public async Task<MemberStatus?> TryStatusAsync(ClusterMember m, TimeSpan timeout)
    {
        try
        {
            return await StatusAsync(m, timeout);
        }
        catch (RpcException)
        {
            return null;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>Waits until every given member reports the same leader, which is one of them and says so itself.</summary>
    public async Task<ClusterMember> WaitLeaderAsync(IReadOnlyCollection<ClusterMember> among, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        var last = "no status yet";
        while (sw.Elapsed < timeout)
        {
            var statuses = await Task.WhenAll(among.Select(m => TryStatusAsync(m, TimeSpan.FromSeconds(2))));
            last = string.Join("; ", among.Zip(statuses, (m, s) => $"{m.Name}: {s?.ToString() ?? "no answer"}"));
            if (statuses.All(s => s is not null) && statuses.Select(s => s!.Leader).Distinct().Count() == 1)
            {
                var leaderId = statuses[0]!.Leader;
                var leader = among.FirstOrDefault(m => m.Id == leaderId);
                if (leaderId != 0 && leader is not null && statuses.Single(s => s!.MemberId == leaderId)!.IsLeader)
                {
                    return leader;
                }
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"no leader agreed on by {string.Join(",", among.Select(m => m.Name))} within {timeout.TotalSeconds} s; last: {last}");
    }

    /// <summary>
    /// The property every cluster scenario ends with: waits until every given member has applied the same raft index
    /// and reports the same revision (at least <paramref name="minRevision"/>) and the same `endpoint hashkv` hash;
    /// returns the hash. Fails after <paramref name="timeout"/> naming the members that differ from the others.
    /// </summary>
    public async Task<MemberHash> WaitConvergedAsync(IReadOnlyCollection<ClusterMember> members, long minRevision, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        var last = "nothing yet";
        var odd = string.Empty;
        while (sw.Elapsed < timeout)
        {
            var states = new List<(ulong Applied, MemberHash Hash)?>();
            foreach (var m in members)
            {
                m.EnsureRunning("while waiting for convergence");
                states.Add(await TryReplicaStateAsync(m));
            }

            last = string.Join("; ", members.Zip(states, (m, h) => $"{m.Name}: {(h is null ? "no answer" : $"applied {h.Value.Applied} rev {h.Value.Hash.Revision} hash {h.Value.Hash.Hash}")}"));
            var answered = states.Where(h => h is not null).Select(h => h!.Value).ToList();
            if (answered.Count == members.Count && answered.Select(h => (h.Applied, h.Hash.Revision, h.Hash.Hash)).Distinct().Count() == 1 && answered[0].Hash.Revision >= minRevision)
            {
                _output.WriteLine($"converged after {sw.ElapsedMilliseconds} ms: {last}");
                return answered[0].Hash;
            }

            // Members at the same applied index must hold the same data: name those that differ from the most common state.
            var common = answered.GroupBy(h => (h.Applied, h.Hash.Revision, h.Hash.Hash)).OrderByDescending(g => g.Count()).FirstOrDefault()?.Key;
            odd = string.Join(",", members.Zip(states, (m, h) => (m, h)).Where(p => p.h is null || (p.h.Value.Applied, p.h.Value.Hash.Revision, p.h.Value.Hash.Hash) != common).Select(p => p.m.Name));
            await Task.Delay(200);
        }

        throw new TimeoutException($"members did not converge (same applied index, revision >= {minRevision} and hashkv) within {timeout.TotalSeconds} s; differing: {odd}; last: {last}");
    }

    /// <summary>Applied index (Status) and `endpoint hashkv` of one member, or null if it did not answer.</summary>
    private async Task<(ulong Applied, MemberHash Hash)?> TryReplicaStateAsync(ClusterMember m)
    {
        var status = await TryStatusAsync(m, TimeSpan.FromSeconds(5));
        var r = await CtlAsync(m, ["endpoint", "hashkv", "-w", "json"], TimeSpan.FromSeconds(5));
        if (status is null || r.ExitCode != 0)
        {
            return null;
        }

        using var doc = JsonDocument.Parse(r.Stdout);
        var h = doc.RootElement[0].GetProperty("HashKV");
        var hash = new MemberHash(h.GetProperty("header").GetProperty("revision").GetInt64(), h.GetProperty("hash").GetUInt32(), h.TryGetProperty("compact_revision", out var c) ? c.GetInt64() : 0);
        var after = await TryStatusAsync(m, TimeSpan.FromSeconds(5));
        // Only a state that did not move while it was read counts (a write applied between the calls is not a mismatch).
        return after is not null && after.AppliedIndex == status.AppliedIndex ? (status.AppliedIndex, hash) : null;
    }

    // ---------------------------------------------------------------- raw gRPC KV (host loopback only)

    public static async Task<long> PutAsync(ClusterMember m, string key, string value, TimeSpan timeout, Metadata? headers = null)
    {
        var r = await new KV.KVClient(m.Channel).PutAsync(
            new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) },
            headers,
            DateTime.UtcNow + timeout);
        return r.Header.Revision;
    }

    public static async Task<RangeResponse> GetAsync(ClusterMember m, string key, TimeSpan timeout, bool serializable = false, string? rangeEnd = null)
    {
        var req = new RangeRequest { Key = ByteString.CopyFromUtf8(key), Serializable = serializable };
        if (rangeEnd is not null)
        {
            req.RangeEnd = ByteString.CopyFromUtf8(rangeEnd);
        }

        return await new KV.KVClient(m.Channel).RangeAsync(req, deadline: DateTime.UtcNow + timeout);
    }

    /// <summary>The range end that makes <paramref name="prefix"/> a prefix query.</summary>
    public static string PrefixEnd(string prefix) => prefix[..^1] + (char)(prefix[^1] + 1);

    // ---------------------------------------------------------------- helpers

    /// <summary>Adds a member object (not started) for a member joining later on given ports.</summary>
    public ClusterMember AddMemberObject(ClusterMember member)
    {
        _members.Add(member);
        return member;
    }

    public async ValueTask DisposeAsync()
    {
        var errors = new List<Exception>();
        foreach (var m in _members)
        {
            try
            {
                m.Dispose();
            }
            catch (InvalidOperationException e)
            {
                errors.Add(e);
            }
        }

        foreach (var m in _members)
        {
            _output.WriteLine($"--- output of {m.Name} ({m.PeerUrl}{(m.Netns is null ? string.Empty : " in " + m.Netns)}, data {m.DataDir}):");
            _output.WriteLine(m.LogSummary(60, 150));
        }

        // KVSTORE_E2E_CLUSTER_LOGS=<dir> keeps every member's complete output for a closer look.
        if (Environment.GetEnvironmentVariable("KVSTORE_E2E_CLUSTER_LOGS") is { Length: > 0 } logDir)
        {
            Directory.CreateDirectory(logDir);
            foreach (var m in _members)
            {
                var file = Path.Combine(logDir, $"{Path.GetFileName(_root)}-{m.Name}.log");
                await File.WriteAllTextAsync(file, m.FullLog());
                _output.WriteLine($"full output of {m.Name}: {file}");
            }
        }

        ServerProcess.TryDelete(_root);
        if (errors.Count > 0)
        {
            throw new AggregateException(errors);
        }
    }

    public static string Fmt(long v) => v.ToString(CultureInfo.InvariantCulture);
}

/// <summary>One entry of `etcdctl member list -w json`.</summary>
public sealed record ListedMember(ulong Id, string Name, IReadOnlyList<string> PeerUrls, IReadOnlyList<string> ClientUrls, bool IsLearner)
{
    public static ListedMember FromJson(JsonElement e) => new(
        e.GetProperty("ID").GetUInt64(),
        e.TryGetProperty("name", out var n) ? n.GetString() ?? string.Empty : string.Empty,
        e.TryGetProperty("peerURLs", out var p) ? [.. p.EnumerateArray().Select(x => x.GetString() ?? string.Empty)] : [],
        e.TryGetProperty("clientURLs", out var c) ? [.. c.EnumerateArray().Select(x => x.GetString() ?? string.Empty)] : [],
        e.TryGetProperty("isLearner", out var l) && l.GetBoolean());

    public override string ToString() => $"{Id:x} {Name} peers [{string.Join(",", PeerUrls)}] clients [{string.Join(",", ClientUrls)}]{(IsLearner ? " learner" : string.Empty)}";
}
