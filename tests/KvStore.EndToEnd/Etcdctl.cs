using System.Text.Json;

namespace KvStore.EndToEnd;

/// <summary>etcdctl 3.4 (Debian etcd-client) with ETCDCTL_API=3 against one server, as <paramref name="user"/> ("name:password") when given.</summary>
public sealed class Etcdctl(ServerProcess server, string? user = null)
{
    private readonly string _path = Tools.Require("etcdctl", "etcd-client");

    public async Task<ProcessResult> RunAsync(string args, string? stdin = null) =>
        await RunAsync(SplitArgs(args), stdin);

    public async Task<ProcessResult> RunAsync(IEnumerable<string> args, string? stdin = null)
    {
        List<string> all = ["--endpoints", server.Endpoint, "--command-timeout=20s", "--dial-timeout=5s"];
        if (server.ClientCertDir is { } dir)
        {
            all.AddRange([
                "--cacert", Path.Combine(dir, "ca.crt"),
                "--cert", Path.Combine(dir, "client.crt"),
                "--key", Path.Combine(dir, "client.key"),
            ]);
        }

        if (user is not null)
        {
            all.Add("--user=" + user);
        }

        all.AddRange(args);
        return await Tools.RunAsync(_path, all, stdin, new Dictionary<string, string> { ["ETCDCTL_API"] = "3" }, TimeSpan.FromSeconds(60));
    }

    /// <summary>Runs and requires exit 0; returns stdout.</summary>
    public async Task<string> OkAsync(string args, string? stdin = null)
    {
        var r = await RunAsync(args, stdin);
        r.ExitCode.Should().Be(0, "etcdctl must succeed:\n{0}", r);
        return r.Stdout;
    }

    /// <summary>Runs with -w json and parses stdout.</summary>
    public async Task<JsonElement> JsonAsync(string args, string? stdin = null)
    {
        var stdout = await OkAsync(args + " -w json", stdin);
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.Clone();
    }

    /// <summary>Splits on spaces; single quotes group (no escapes needed in the tests).</summary>
    public static List<string> SplitArgs(string args)
    {
        var list = new List<string>();
        var current = new System.Text.StringBuilder();
        var quoted = false;
        var any = false;
        foreach (var c in args)
        {
            if (c == '\'')
            {
                quoted = !quoted;
                any = true;
            }
            else if (c == ' ' && !quoted)
            {
                if (any)
                {
                    list.Add(current.ToString());
                    current.Clear();
                    any = false;
                }
            }
            else
            {
                current.Append(c);
                any = true;
            }
        }

        if (any)
        {
            list.Add(current.ToString());
        }

        return list;
    }
}

/// <summary>Decoding etcdctl's JSON (keys and values are base64, 64-bit numbers are plain numbers).</summary>
public static class EtcdJson
{
    public static string B64(string s) => Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(s));

    public static string Str(JsonElement e) => System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(e.GetString() ?? string.Empty));

    public static long Num(JsonElement obj, string name) => obj.TryGetProperty(name, out var v) ? v.GetInt64() : 0;

    public static long Revision(JsonElement response) => response.GetProperty("header").GetProperty("revision").GetInt64();

    public static IReadOnlyList<JsonElement> Kvs(JsonElement response) =>
        response.TryGetProperty("kvs", out var kvs) ? kvs.EnumerateArray().ToList() : [];

    public static IReadOnlyList<(string Key, string Value)> Pairs(JsonElement response) =>
        Kvs(response).Select(kv => (Str(kv.GetProperty("key")), kv.TryGetProperty("value", out var v) ? Str(v) : string.Empty)).ToList();
}
