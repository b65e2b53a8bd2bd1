using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// etcdctl 3.4 given endpoints as URLs ("http://127.0.0.1:P", and the member client URLs that --cluster dials) sends
/// the whole URL as the HTTP/2 :authority; etcd accepts it, and so must we (Kestrel alone resets such streams).
/// </summary>
public sealed class UrlEndpointTests(ServerFixture fixture, ITestOutputHelper output)
    : SharedServerTest(fixture, output), IClassFixture<ServerFixture>
{
    [Fact]
    public async Task Endpoint_status_with_a_url_endpoint()
    {
        var r = await RunAsync("endpoint", "status");
        r.ExitCode.Should().Be(0, "{0}", r);
        r.Stdout.Should().StartWith(Server.ClientUrl + ", ");

        var cluster = await RunAsync("endpoint", "status", "--cluster");
        cluster.ExitCode.Should().Be(0, "{0}", cluster);
        cluster.Stdout.Should().StartWith(Server.ClientUrl + ", ");
    }

    [Fact]
    public async Task Put_and_get_with_a_url_endpoint()
    {
        var k = Prefix + "k";
        var put = await RunAsync("put", k, "v1");
        put.ExitCode.Should().Be(0, "{0}", put);
        put.Stdout.Should().Be("OK\n");

        var txn = await RunAsync(["txn"], $"value(\"{k}\") = \"v1\"\n\nput {k} v2\nget {k}\n\n\n");
        txn.ExitCode.Should().Be(0, "{0}", txn);
        txn.Stdout.Should().Contain("SUCCESS").And.Contain("v2");

        var get = await RunAsync("get", k, "--print-value-only");
        get.ExitCode.Should().Be(0, "{0}", get);
        get.Stdout.Should().Be("v2\n");

        (await Ctl.OkAsync($"get {k} --print-value-only")).Should().Be("v2\n", "host:port endpoints still work");
    }

    private Task<ProcessResult> RunAsync(params string[] args) => RunAsync(args, null);

    private async Task<ProcessResult> RunAsync(string[] args, string? stdin)
    {
        List<string> all = ["--endpoints", Server.ClientUrl, "--command-timeout=20s", "--dial-timeout=5s", .. args];
        return await Tools.RunAsync(
            Tools.Require("etcdctl", "etcd-client"),
            all,
            stdin,
            new Dictionary<string, string> { ["ETCDCTL_API"] = "3" },
            TimeSpan.FromSeconds(60));
    }
}
