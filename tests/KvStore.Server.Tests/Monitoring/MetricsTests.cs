using System.Globalization;
using System.Net;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Server.Tests.Cluster;

namespace KvStore.Server.Tests.Monitoring;

/// <summary>
/// /metrics of three full members in one process, scraped over HTTP/1.1 on the client port and parsed: every metric
/// the etcd mixin and etcd's dashboards use is there with etcd's type, and the counters move with writes, failed
/// requests, a leader change and a member going down.
/// </summary>
public sealed class MetricsTests
{
    private static readonly Dictionary<string, string> Expected = new(StringComparer.Ordinal)
    {
        ["etcd_server_has_leader"] = "gauge",
        ["etcd_server_is_leader"] = "gauge",
        ["etcd_server_leader_changes_seen_total"] = "counter",
        ["etcd_server_proposals_committed_total"] = "gauge",
        ["etcd_server_proposals_applied_total"] = "gauge",
        ["etcd_server_proposals_pending"] = "gauge",
        ["etcd_server_proposals_failed_total"] = "counter",
        ["etcd_server_quota_backend_bytes"] = "gauge",
        ["etcd_server_id"] = "gauge",
        ["etcd_server_version"] = "gauge",
        ["etcd_cluster_version"] = "gauge",
        ["etcd_mvcc_db_total_size_in_bytes"] = "gauge",
        ["etcd_mvcc_db_total_size_in_use_in_bytes"] = "gauge",
        ["etcd_disk_wal_fsync_duration_seconds"] = "histogram",
        ["etcd_disk_backend_commit_duration_seconds"] = "histogram",
        ["etcd_network_peer_sent_failures_total"] = "counter",
        ["etcd_network_peer_round_trip_time_seconds"] = "histogram",
        ["etcd_network_peer_sent_bytes_total"] = "counter",
        ["etcd_network_peer_received_bytes_total"] = "counter",
        ["etcd_network_client_grpc_sent_bytes_total"] = "counter",
        ["etcd_network_client_grpc_received_bytes_total"] = "counter",
        ["grpc_server_started_total"] = "counter",
        ["grpc_server_handled_total"] = "counter",
        ["grpc_server_msg_received_total"] = "counter",
        ["grpc_server_msg_sent_total"] = "counter",
        ["process_cpu_seconds_total"] = "counter",
        ["process_start_time_seconds"] = "gauge",
        ["process_open_fds"] = "gauge",
        ["process_virtual_memory_bytes"] = "gauge",
        ["process_resident_memory_bytes"] = "gauge",
    };

    [Fact]
    public async Task Every_mixin_metric_is_exposed_with_etcds_type_and_moves_with_writes_elections_and_peer_failures()
    {
        var root = Path.Combine(Path.GetTempPath(), "kvstore-metrics-" + Guid.NewGuid().ToString("N")[..8]);
        var peerPorts = LoopbackPorts.Take(3);
        var clientPorts = LoopbackPorts.Take(3);
        var initial = string.Join(',', peerPorts.Select((p, i) => $"s{i}=http://127.0.0.1:{p}"));
        var servers = new List<FullServer>();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        try
        {
            for (var i = 0; i < 3; i++)
            {
                // The third member runs with --metrics basic: no handling-time histograms there.
                var metrics = i < 2 ? "extensive" : "basic";
                servers.Add(await FullServer.StartAsync(root, i, peerPorts[i], clientPorts[i], initial, configure: o => o.Metrics = metrics));
            }

            var leader = await FullServer.WaitLeaderAsync(servers);
            var leaderView = await Scrape(http, leader);
            foreach (var (name, type) in Expected)
            {
                leaderView.Types.Should().ContainKey(name).WhoseValue.Should().Be(type, "{0} has etcd's type", name);
            }

            leaderView.Value("etcd_server_has_leader").Should().Be(1);
            leaderView.Value("etcd_server_is_leader").Should().Be(1);
            leaderView.Value("etcd_server_leader_changes_seen_total").Should().BeGreaterThanOrEqualTo(1);
            leaderView.Value("etcd_server_quota_backend_bytes").Should().Be(ServerOptions.DefaultQuotaBytes);
            leaderView.Value("etcd_server_id", ("server_id", leader.Host.MemberId.ToString("x", CultureInfo.InvariantCulture))).Should().Be(1);
            leaderView.Value("etcd_server_version", ("server_version", Versions.EtcdServer)).Should().Be(1);
            // m0 and m1 run with extensive metrics, m2 with basic; any of them may lead.
            (await Scrape(http, servers[0])).Types.Should().ContainKey("grpc_server_handling_seconds", "--metrics extensive adds gRPC latency histograms");
            (await Scrape(http, servers[2])).Types.Should().NotContainKey("grpc_server_handling_seconds", "--metrics basic has none");

            // Writes through the client API of an extensive member (leader or not) move the proposal, disk, gRPC and byte counters.
            var front = servers[0];
            var before = await Scrape(http, front);
            using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{front.ClientPort}");
            var kv = new KV.KVClient(channel);
            for (var i = 0; i < 5; i++)
            {
                await kv.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8("k" + i), Value = ByteString.CopyFromUtf8("v") });
            }

            var empty = async () => await kv.PutAsync(new PutRequest { Key = ByteString.Empty, Value = ByteString.CopyFromUtf8("v") });
            (await empty.Should().ThrowAsync<RpcException>()).Which.StatusCode.Should().Be(StatusCode.InvalidArgument);

            var after = await Scrape(http, front);
            var put = new[] { ("grpc_type", "unary"), ("grpc_service", "etcdserverpb.KV"), ("grpc_method", "Put") };
            (after.Value("grpc_server_started_total", put) - before.Value("grpc_server_started_total", put)).Should().Be(6);
            (after.Value("grpc_server_handled_total", [.. put, ("grpc_code", "OK")]) - before.Value("grpc_server_handled_total", [.. put, ("grpc_code", "OK")])).Should().Be(5);
            (after.Value("grpc_server_handled_total", [.. put, ("grpc_code", "InvalidArgument")]) - before.Value("grpc_server_handled_total", [.. put, ("grpc_code", "InvalidArgument")])).Should().Be(1);
            after.Value("grpc_server_handling_seconds_count", put).Should().BeGreaterThanOrEqualTo(6);
            after.Value("etcd_server_proposals_committed_total").Should().BeGreaterThanOrEqualTo(before.Value("etcd_server_proposals_committed_total") + 5);
            after.Value("etcd_server_proposals_applied_total").Should().BeGreaterThanOrEqualTo(before.Value("etcd_server_proposals_applied_total") + 5);
            after.Value("etcd_disk_wal_fsync_duration_seconds_count").Should().BeGreaterThan(before.Value("etcd_disk_wal_fsync_duration_seconds_count"));
            after.Value("etcd_disk_backend_commit_duration_seconds_count").Should().BeGreaterThan(before.Value("etcd_disk_backend_commit_duration_seconds_count"));
            after.Value("etcd_network_client_grpc_received_bytes_total").Should().BeGreaterThan(before.Value("etcd_network_client_grpc_received_bytes_total"));
            after.Value("etcd_network_client_grpc_sent_bytes_total").Should().BeGreaterThan(before.Value("etcd_network_client_grpc_sent_bytes_total"));
            var leaderAfter = await Scrape(http, leader);
            foreach (var peer in servers.Where(s => s != leader))
            {
                var label = peer.Host.MemberId.ToString("x", CultureInfo.InvariantCulture);
                leaderAfter.Value("etcd_network_peer_sent_bytes_total", ("To", label)).Should().BeGreaterThan(0);
                leaderAfter.Value("etcd_network_peer_received_bytes_total", ("From", label)).Should().BeGreaterThan(0);
                leaderAfter.Value("etcd_network_peer_round_trip_time_seconds_count", ("To", label)).Should().BeGreaterThan(0);
            }

            // The round-trip histogram keeps sampling while the streams stay up (the leader's heartbeats), not only
            // when a stream opens: with no write and no reconnect its count still grows.
            var probed = servers.First(s => s != leader);
            var rtt = ("To", probed.Host.MemberId.ToString("x", CultureInfo.InvariantCulture));
            var samplesBefore = leaderAfter.Value("etcd_network_peer_round_trip_time_seconds_count", rtt);
            var samplesNow = samplesBefore;
            for (var i = 0; i < 100 && samplesNow < samplesBefore + 3; i++)
            {
                await Task.Delay(100);
                samplesNow = (await Scrape(http, leader)).Value("etcd_network_peer_round_trip_time_seconds_count", rtt);
            }

            samplesNow.Should().BeGreaterThanOrEqualTo(samplesBefore + 3, "heartbeat responses are timed");
            (await Scrape(http, leader)).Value("etcd_network_peer_round_trip_time_seconds_sum", rtt).Should().BePositive();

            // A follower sends no heartbeats: it times etcd's periodic probe (every 4 s) toward each peer instead.
            var toLeader = ("To", leader.Host.MemberId.ToString("x", CultureInfo.InvariantCulture));
            var probesBefore = (await Scrape(http, probed)).Value("etcd_network_peer_round_trip_time_seconds_count", toLeader);
            var probesNow = probesBefore;
            for (var i = 0; i < 150 && probesNow < probesBefore + 2; i++)
            {
                await Task.Delay(100);
                probesNow = (await Scrape(http, probed)).Value("etcd_network_peer_round_trip_time_seconds_count", toLeader);
            }

            probesNow.Should().BeGreaterThanOrEqualTo(probesBefore + 2, "a follower probes the leader every 4 s");

            // A leader change is counted by the members that see it.
            var target = servers.First(s => s != leader);
            var seenBefore = (await Scrape(http, target)).Value("etcd_server_leader_changes_seen_total");
            using (var timeout = Timeout())
            {
                await leader.Host.Members.MoveLeaderAsync(target.Host.MemberId, timeout.Token);
            }

            leader = await FullServer.WaitLeaderAsync(servers);
            leader.Should().BeSameAs(target);
            var moved = await Scrape(http, target);
            moved.Value("etcd_server_leader_changes_seen_total").Should().Be(seenBefore + 1);
            moved.Value("etcd_server_is_leader").Should().Be(1);

            // A member going down shows up as send failures toward it on the leader.
            var victim = servers.First(s => s != leader);
            var victimLabel = victim.Host.MemberId.ToString("x", CultureInfo.InvariantCulture);
            await victim.DisposeAsync();
            using (var timeout = Timeout())
            {
                while ((await Scrape(http, leader)).Value("etcd_network_peer_sent_failures_total", ("To", victimLabel)) == 0)
                {
                    await Task.Delay(50, timeout.Token);
                }
            }
        }
        finally
        {
            foreach (var s in servers)
            {
                await s.DisposeAsync();
            }

            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static CancellationTokenSource Timeout(int seconds = 30) => new(TimeSpan.FromSeconds(seconds));

    private static async Task<Exposition> Scrape(HttpClient http, FullServer member)
    {
        using var response = await http.GetAsync(new Uri($"http://127.0.0.1:{member.ClientPort}/metrics"));
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/plain");
        return Exposition.Parse(await response.Content.ReadAsStringAsync());
    }

    /// <summary>The text exposition format, parsed: each family's type and each sample's labels and value.</summary>
    private sealed class Exposition
    {
        public Dictionary<string, string> Types { get; } = new(StringComparer.Ordinal);

        public List<(string Name, Dictionary<string, string> Labels, double Value)> Samples { get; } = [];

        public static Exposition Parse(string text)
        {
            var result = new Exposition();
            foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
                {
                    var parts = line.Split(' ');
                    result.Types[parts[2]] = parts[3];
                    continue;
                }

                if (line.StartsWith('#'))
                {
                    continue;
                }

                var brace = line.IndexOf('{', StringComparison.Ordinal);
                var space = line.LastIndexOf(' ');
                var name = brace >= 0 ? line[..brace] : line[..space];
                var labels = new Dictionary<string, string>(StringComparer.Ordinal);
                if (brace >= 0)
                {
                    var body = line[(brace + 1)..line.LastIndexOf('}')];
                    foreach (var pair in body.Split("\",", StringSplitOptions.RemoveEmptyEntries))
                    {
                        var eq = pair.IndexOf('=', StringComparison.Ordinal);
                        labels[pair[..eq]] = pair[(eq + 2)..].TrimEnd('"');
                    }
                }

                result.Samples.Add((name, labels, double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture)));
            }

            return result;
        }

        /// <summary>The value of the one sample with this name carrying these labels (0 when there is none).</summary>
        public double Value(string name, params (string Key, string Value)[] labels) =>
            Samples.Where(s => s.Name == name && labels.All(l => s.Labels.GetValueOrDefault(l.Key) == l.Value)).Select(s => s.Value).DefaultIfEmpty(0).Sum();
    }
}
