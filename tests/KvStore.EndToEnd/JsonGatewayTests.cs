using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace KvStore.EndToEnd;

/// <summary>
/// The JSON gateway on the client port, side by side with real etcd 3.4: the same requests (curl's form: POST, a JSON
/// body with base64 keys) get the same HTTP status and the same JSON, once member and cluster IDs, lease IDs, terms,
/// tokens, sizes and versions are masked. Covers KV, leases, cluster, maintenance, auth with the Authorization
/// header, errors, and a streamed watch.
/// </summary>
public sealed class JsonGatewayTests : IAsyncLifetime, IDisposable
{
    /// <summary>Values that differ between any two members or servers by nature.</summary>
    private static readonly HashSet<string> Masked =
    [
        "cluster_id", "member_id", "raft_term", "ID", "leader", "token", "version", "dbSize", "dbSizeInUse", "dbSizeQuota",
        "raftIndex", "raftTerm", "raftAppliedIndex", "peerURLs", "clientURLs", "TTL", "hash", "compact_revision", "hash_revision",
    ];

    /// <summary>Fields etcd 3.5 added (kvstore serves the 3.5 API; the reference is etcd 3.4).</summary>
    private static readonly HashSet<string> Since35 = ["dbSizeQuota", "storageVersion", "downgrade_info"];

    private readonly ServerProcess _etcd = new(extraArgs: ["--bcrypt-cost", "4"], executable: Tools.Require("etcd", "etcd-server"));
    private readonly ServerProcess _kvstore = new(extraArgs: ["--bcrypt-cost", "4"]);
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };

    public async Task InitializeAsync() => await Task.WhenAll(_etcd.StartAsync(), _kvstore.StartAsync());

    public Task DisposeAsync() => Task.CompletedTask;

    public void Dispose()
    {
        _http.Dispose();
        _etcd.Dispose();
        _kvstore.Dispose();
    }

    [Fact]
    public async Task Kv_lease_cluster_maintenance_auth_and_watch_answer_as_etcds_gateway()
    {
        string[] steps =
        [
            "kv/put {\"key\":\"Zm9v\",\"value\":\"YmFy\"}",
            "kv/put {\"key\":\"Zm9v\",\"value\":\"YmF6\",\"prev_kv\":true}",
            "kv/range {\"key\":\"Zm9v\"}",
            "kv/range {\"key\":\"AA==\",\"range_end\":\"AA==\",\"count_only\":true}",
            "kv/txn {\"compare\":[{\"key\":\"Zm9v\",\"target\":\"MOD\",\"mod_revision\":\"3\",\"result\":\"EQUAL\"}],\"success\":[{\"request_put\":{\"key\":\"YQ==\",\"value\":\"MQ==\"}}],\"failure\":[{\"request_range\":{\"key\":\"Zm9v\"}}]}",
            "kv/txn {\"compare\":[{\"key\":\"Zm9v\",\"version\":\"9\",\"target\":\"VERSION\"}],\"failure\":[{\"request_range\":{\"key\":\"Zm9v\"}}]}",
            "kv/deleterange {\"key\":\"YQ==\",\"prev_kv\":true}",
            "kv/put {\"key\":\"\",\"value\":\"YmFy\"}",
            "kv/range {\"key\":\"Zm9v\",\"revision\":\"99\"}",
            "kv/compaction {\"revision\":\"3\"}",
            "kv/range {\"key\":\"Zm9v\",\"revision\":\"2\"}",
            "lease/grant {\"TTL\":60,\"ID\":4660}",
            "lease/timetolive {\"ID\":4660,\"keys\":true}",
            "lease/leases {}",
            "lease/keepalive {\"ID\":4660}",
            "lease/revoke {\"ID\":4660}",
            "lease/revoke {\"ID\":4660}",
            "cluster/member/list {}",
            "maintenance/status {}",
            "auth/role/add {\"name\":\"root\"}",
            "auth/user/add {\"name\":\"root\",\"password\":\"pw\"}",
            "auth/user/grant {\"user\":\"root\",\"role\":\"root\"}",
            "auth/enable {}",
            "auth/authenticate {\"name\":\"root\",\"password\":\"wrong\"}",
            "kv/put {\"key\":\"Zm9v\",\"value\":\"YmFy\"}",
        ];

        foreach (var step in steps)
        {
            var space = step.IndexOf(' ', StringComparison.Ordinal);
            var (path, body) = (step[..space], step[(space + 1)..]);
            var expected = await PostAsync(_etcd, path, body, null);
            var actual = await PostAsync(_kvstore, path, body, null);
            actual.Should().Be(expected, "POST /v3/{0} {1}", path, body);
        }

        // With auth on, the Authorization header carries the token from /v3/auth/authenticate; /v3beta/ as etcd 3.4
        // also serves; a streamed watch answers one JSON object per line.
        var answers = new List<string>();
        foreach (var server in new[] { _etcd, _kvstore })
        {
            using var login = await _http.PostAsync(new Uri(server.ClientUrl + "/v3/auth/authenticate"), Json("{\"name\":\"root\",\"password\":\"pw\"}"));
            login.StatusCode.Should().Be(HttpStatusCode.OK);
            var token = JsonNode.Parse(await login.Content.ReadAsStringAsync())!["token"]!.GetValue<string>();
            var put = await PostAsync(server, "kv/put", "{\"key\":\"Zm9v\",\"value\":\"YmFy\"}", token);
            put.Should().StartWith("200 ", "an authenticated put on {0}", server.Executable);
            var beta = await PostAsync(server, "kv/range", "{\"key\":\"Zm9v\"}", token, "/v3beta/");
            var anonymous = await PostAsync(server, "kv/range", "{\"key\":\"Zm9v\"}", null, "/v3beta/");
            answers.Add(string.Join('\n', put, beta, anonymous, await WatchOnePutAsync(server, token)));
        }

        answers[1].Should().Be(answers[0]);
    }

    private async Task<string> WatchOnePutAsync(ServerProcess server, string token)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(server.ClientUrl + "/v3/watch")) { Content = Json("{\"create_request\":{\"key\":\"d2F0Y2g=\"}}") };
        request.Headers.TryAddWithoutValidation("Authorization", token);
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));
        var created = Mask(JsonNode.Parse((await reader.ReadLineAsync(timeout.Token))!)!);
        (await PostAsync(server, "kv/put", "{\"key\":\"d2F0Y2g=\",\"value\":\"MQ==\"}", token)).Should().StartWith("200 ");
        var evt = Mask(JsonNode.Parse((await reader.ReadLineAsync(timeout.Token))!)!);
        return created + "\n" + evt;
    }

    private async Task<string> PostAsync(ServerProcess server, string path, string body, string? token, string prefix = "/v3/")
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(server.ClientUrl + prefix + path)) { Content = Json(body) };
        if (token is not null)
        {
            request.Headers.TryAddWithoutValidation("Authorization", token);
        }

        using var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return $"{(int)response.StatusCode} {Mask(JsonNode.Parse(text)!)}";
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static string Mask(JsonNode node)
    {
        Walk(node);
        return node.ToJsonString();

        static void Walk(JsonNode? n)
        {
            switch (n)
            {
                case JsonObject o:
                    foreach (var name in o.Select(p => p.Key).ToList())
                    {
                        if (Since35.Contains(name))
                        {
                            o.Remove(name);
                        }
                        else if (Masked.Contains(name))
                        {
                            o[name] = "*";
                        }
                        else
                        {
                            Walk(o[name]);
                        }
                    }

                    break;
                case JsonArray a:
                    foreach (var item in a)
                    {
                        Walk(item);
                    }

                    break;
            }
        }
    }
}
