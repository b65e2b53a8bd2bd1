using System.Text;
using System.Text.Json;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// RBAC end to end with etcdctl 3.4: the same users, roles and permissions on KvStore and on real etcd 3.4, then a
/// matrix of users × operations (get/put/del on keys, ranges, prefixes and from-key, txn compares and both branches,
/// watch, lease revoke, auth reads, admin RPCs). Each cell must be allowed or denied as the table says, and KvStore's
/// etcdctl output (exit code, stdout, the "Error:" line) must equal etcd's.
/// </summary>
public sealed class AuthRbacTests(ITestOutputHelper output) : IAsyncLifetime
{
    /// <summary>A permitted watch never ends by itself: it is stopped after this long (its events are out by then).</summary>
    private const string WatchTimeout = "3";

    /// <summary>Any other cell: a generous bound, never reached by a healthy server.</summary>
    private const string CellTimeout = "30";

    private readonly List<ServerProcess> _servers = [];

    /// <summary>Set up before auth is enabled (no credentials needed yet); identical on both servers.</summary>
    private static readonly string[] Setup =
    [
        "user add root:rootpw", "user grant-role root root",
        "user add alice:apw", "user add bob:bpw", "user add carol:cpw",
        "role add reader", "role grant-permission reader read /app/ --prefix",
        "role add writer", "role grant-permission writer write /app/w", "role grant-permission writer readwrite /b/ /c/",
        "role add tail", "role grant-permission tail read --from-key /z",
        "user grant-role alice reader", "user grant-role bob writer", "user grant-role bob reader", "user grant-role carol tail",
        "put /app/x 1", "put /app/w 1", "put /other 1", "put /z1 1",
        "put /leased v --lease={lease}",
        "auth enable",
    ];

    /// <summary>(user, etcdctl arguments, stdin for txn, allowed?). An empty user sends no credentials.</summary>
    public static TheoryData<string, string, string?, bool> Matrix => new()
    {
        { "alice", "get /app/x", null, true },
        { "alice", "get --prefix /app/", null, true },
        { "alice", "get /other", null, false },
        { "alice", "get --prefix ''", null, false },
        { "alice", "put /app/x 2", null, false },
        { "", "get /app/x", null, false },
        { "bob", "put /app/w 2", null, true },
        { "bob", "put /app/x 2", null, false },
        { "bob", "put /b/1 v", null, true },
        { "bob", "put /c/1 v", null, false },
        { "bob", "get /b/ /c/", null, true },
        { "bob", "get /b/ /d/", null, false },
        { "bob", "del --prefix /app/", null, false },
        { "bob", "del /b/1 --prev-kv", null, true },
        { "carol", "get --from-key /z", null, true },
        { "carol", "get --from-key /y", null, false },
        { "carol", "get /zzz", null, true },
        { "alice", "txn", "value(\"/app/x\") = \"1\"\n\nget /app/x\n\n\n", true },
        { "bob", "txn", "value(\"/app/x\") = \"1\"\n\nput /app/w from-txn\n\n\n", true },
        { "bob", "txn", "value(\"/other\") = \"1\"\n\nput /app/w from-txn\n\n\n", false },
        { "bob", "txn", "value(\"/app/x\") = \"1\"\n\nput /app/w from-txn\n\nput /app/x never\n\n", false },
        { "alice", "watch /other", null, false },
        { "alice", "watch --prefix /app/ --rev=1", null, true },
        { "alice", "lease revoke {lease}", null, false },
        { "alice", "user get alice", null, true },
        { "alice", "user get bob", null, false },
        { "alice", "role get reader", null, true },
        { "alice", "role get writer", null, false },
        { "alice", "user list", null, false },
        { "alice", "role add r2", null, false },
        { "alice", "defrag", null, false },
        { "root", "defrag", null, true },
        { "root", "get --prefix ''", null, true },
    };

    public async Task InitializeAsync()
    {
        var etcd = Tools.Require("etcd", "etcd-server");
        foreach (var executable in new[] { etcd, ServerProcess.ServerPath })
        {
            var server = new ServerProcess(extraArgs: ["--bcrypt-cost", "4"], executable: executable);
            _servers.Add(server);
        }

        await Task.WhenAll(_servers.Select(s => s.StartAsync()));
        foreach (var server in _servers)
        {
            var grant = await RunAsync(server, string.Empty, "lease grant 600 -w json", null);
            grant.ExitCode.Should().Be(0, grant.ToString());
            _leases[server] = JsonDocument.Parse(grant.Stdout).RootElement.GetProperty("ID").GetInt64().ToString("x", System.Globalization.CultureInfo.InvariantCulture);
            foreach (var step in Setup)
            {
                var r = await RunAsync(server, string.Empty, step, null);
                r.ExitCode.Should().Be(0, "setup step on {0}: {1}", server.DataDir, r);
            }
        }
    }

    private readonly Dictionary<ServerProcess, string> _leases = [];

    [Fact]
    public async Task Every_cell_of_the_matrix_is_decided_as_etcd_decides_it()
    {
        var failures = new StringBuilder();
        foreach (var row in Matrix)
        {
            var (user, args, stdin, allowed) = ((string)row[0], (string)row[1], (string?)row[2], (bool)row[3]);
            var etcd = Describe(await RunAsync(_servers[0], user, args, stdin), _servers[0]);
            var ours = Describe(await RunAsync(_servers[1], user, args, stdin), _servers[1]);
            var denied = ours.Contains("permission denied", StringComparison.Ordinal) || ours.Contains("user name is empty", StringComparison.Ordinal);
            if (denied == allowed || ours != etcd)
            {
                failures.Append(CultureInfo($"--- {user} {args} (expected {(allowed ? "allowed" : "denied")})\netcd:\n{etcd}\nkvstore:\n{ours}\n"));
            }
        }

        failures.ToString().Should().BeEmpty();
    }

    [Fact]
    public async Task Role_and_permission_changes_take_effect_at_once()
    {
        foreach (var server in _servers)
        {
            (await RunAsync(server, "alice", "get /app/x --print-value-only", null)).Stdout.Should().Be("1\n");
            (await RunAsync(server, "root", "user revoke-role alice reader", null)).ExitCode.Should().Be(0);
            Describe(await RunAsync(server, "alice", "get /app/x", null), server).Should().Contain("permission denied");
            (await RunAsync(server, "root", "role grant-permission tail read /app/x", null)).ExitCode.Should().Be(0);
            (await RunAsync(server, "root", "user grant-role alice tail", null)).ExitCode.Should().Be(0);
            (await RunAsync(server, "alice", "get /app/x --print-value-only", null)).Stdout.Should().Be("1\n");
            (await RunAsync(server, "root", "role delete tail", null)).ExitCode.Should().Be(0);
            Describe(await RunAsync(server, "alice", "get /app/x", null), server).Should().Contain("permission denied");
        }
    }

    /// <summary>Exit code, stdout and stderr without the client's JSON log lines (retry noise with timestamps).</summary>
    private static string Describe(ProcessResult r, ServerProcess server)
    {
        var errors = r.Stderr.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('{'));
        // etcd 3.4 returns its internal error unmapped from the maintenance RPCs (gRPC Unknown "auth: permission
        // denied"); etcd 3.5 maps it to PermissionDenied "etcdserver: permission denied", which KvStore sends.
        return CultureInfo($"[exit {r.ExitCode}]\n{r.Stdout}{string.Join('\n', errors)}")
            .Replace(server.Endpoint, "<endpoint>", StringComparison.Ordinal)
            .Replace("rpc error: code = Unknown desc = auth: permission denied", "etcdserver: permission denied", StringComparison.Ordinal);
    }

    private async Task<ProcessResult> RunAsync(ServerProcess server, string user, string args, string? stdin)
    {
        var etcdctl = Tools.Require("etcdctl", "etcd-client");
        var timeout = Tools.Require("timeout", "coreutils");
        var lease = _leases.GetValueOrDefault(server, "0");
        List<string> all = [args.StartsWith("watch", StringComparison.Ordinal) ? WatchTimeout : CellTimeout, etcdctl, "--endpoints", server.Endpoint, "--command-timeout=5s", "--dial-timeout=5s"];
        if (user.Length > 0)
        {
            all.Add("--user=" + user + ":" + user switch { "root" => "rootpw", "alice" => "apw", "bob" => "bpw", _ => "cpw" });
        }

        all.AddRange(Etcdctl.SplitArgs(args.Replace("{lease}", lease, StringComparison.Ordinal)));
        return await Tools.RunAsync(timeout, all, stdin, new Dictionary<string, string> { ["ETCDCTL_API"] = "3" }, TimeSpan.FromSeconds(60));
    }

    private static string CultureInfo(FormattableString text) => FormattableString.Invariant(text);

    public Task DisposeAsync()
    {
        foreach (var server in _servers)
        {
            output.WriteLine($"--- {server.DataDir}:");
            output.WriteLine(server.LogText());
            server.Dispose();
        }

        return Task.CompletedTask;
    }
}
