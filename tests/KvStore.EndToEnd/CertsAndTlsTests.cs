using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>deploy/certs/make-certs.sh: the chain verifies, SANs and key usages are right, and etcdctl talks mTLS to the server.</summary>
public sealed class CertsAndTlsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = ServerProcess.CreateTempDir("kvstore-e2e-pki-");
    private ServerProcess? _server;

    private static string Script => Path.Combine(ServerProcess.RepoRoot, "deploy", "certs", "make-certs.sh");

    [Fact]
    public async Task Make_certs_creates_a_verifiable_chain_with_sans_for_every_member()
    {
        var openssl = Tools.Require("openssl", "openssl");
        var r = await MakeCertsAsync("m0=10.0.0.10,kv0.example.com", "m1=10.0.0.11", "m2=kv2.example.com,fd00::12");
        r.ExitCode.Should().Be(0, r.ToString());

        var ca = Path.Combine(_dir, "ca.crt");
        foreach (var m in new[] { "m0", "m1", "m2" })
        {
            foreach (var kind in new[] { "server", "peer" })
            {
                var crt = Path.Combine(_dir, m, kind + ".crt");
                var verify = await Tools.RunAsync(openssl, ["verify", "-CAfile", ca, crt]);
                verify.ExitCode.Should().Be(0, verify.ToString());
                verify.Stdout.Should().Be($"{crt}: OK\n");
                File.Exists(Path.Combine(_dir, m, kind + ".key")).Should().BeTrue();
                (await PublicKeyAsync(openssl, crt, "x509")).Should().Be(await PublicKeyAsync(openssl, Path.Combine(_dir, m, kind + ".key"), "pkey"), "{0} matches its key", crt);
                var eku = await ExtAsync(openssl, crt, "extendedKeyUsage");
                eku.Should().Contain("TLS Web Server Authentication").And.Contain("TLS Web Client Authentication");
            }
        }

        var san0 = await ExtAsync(openssl, Path.Combine(_dir, "m0", "server.crt"), "subjectAltName");
        san0.Should().Contain("IP Address:10.0.0.10").And.Contain("DNS:kv0.example.com").And.Contain("DNS:localhost").And.Contain("IP Address:127.0.0.1");
        (await ExtAsync(openssl, Path.Combine(_dir, "m1", "peer.crt"), "subjectAltName")).Should().Contain("IP Address:10.0.0.11").And.NotContain("10.0.0.10");
        var san2 = await ExtAsync(openssl, Path.Combine(_dir, "m2", "server.crt"), "subjectAltName");
        san2.Should().Contain("DNS:kv2.example.com").And.Contain("IP Address:FD00:0:0:0:0:0:0:12");

        var client = Path.Combine(_dir, "client.crt");
        (await Tools.RunAsync(openssl, ["verify", "-CAfile", ca, client])).ExitCode.Should().Be(0);
        var clientEku = await ExtAsync(openssl, client, "extendedKeyUsage");
        clientEku.Should().Contain("TLS Web Client Authentication").And.NotContain("Server");

        // The example names of the common Kubernetes guides: ca.pem and one kubernetes.pem for every member and port.
        (await File.ReadAllBytesAsync(Path.Combine(_dir, "ca.pem"))).Should().Equal(await File.ReadAllBytesAsync(ca));
        var kubernetes = Path.Combine(_dir, "kubernetes.pem");
        (await Tools.RunAsync(openssl, ["verify", "-CAfile", Path.Combine(_dir, "ca.pem"), kubernetes])).Stdout.Should().Be($"{kubernetes}: OK\n");
        (await PublicKeyAsync(openssl, kubernetes, "x509")).Should().Be(await PublicKeyAsync(openssl, Path.Combine(_dir, "kubernetes-key.pem"), "pkey"));
        (await ExtAsync(openssl, kubernetes, "extendedKeyUsage")).Should().Contain("TLS Web Server Authentication").And.Contain("TLS Web Client Authentication");
        (await ExtAsync(openssl, kubernetes, "subjectAltName")).Should()
            .Contain("IP Address:10.0.0.10").And.Contain("DNS:kv0.example.com").And.Contain("IP Address:10.0.0.11")
            .And.Contain("DNS:kv2.example.com").And.Contain("IP Address:127.0.0.1").And.Contain("DNS:kubernetes.default.svc.cluster.local");

        // Adding a member later reuses the CA and leaves existing files alone.
        var before = await File.ReadAllBytesAsync(Path.Combine(_dir, "m0", "server.crt"));
        var again = await MakeCertsAsync("m0=10.0.0.10", "m3=10.0.0.13");
        again.ExitCode.Should().Be(0, again.ToString());
        again.Stdout.Should().Contain("reusing CA");
        (await File.ReadAllBytesAsync(Path.Combine(_dir, "m0", "server.crt"))).Should().Equal(before);
        (await Tools.RunAsync(openssl, ["verify", "-CAfile", ca, Path.Combine(_dir, "m3", "server.crt")])).ExitCode.Should().Be(0);

        var bad = await MakeCertsAsync("no-address");
        bad.ExitCode.Should().Be(2);
        bad.Stderr.Should().Contain("bad member 'no-address'");
    }

    [Fact]
    public async Task Etcdctl_talks_to_the_server_over_mutual_tls()
    {
        var r = await MakeCertsAsync("e2e=127.0.0.1");
        r.ExitCode.Should().Be(0, r.ToString());

        // The server with the guides' file names (the per-member server.crt serves the same way in the other tests).
        _server = new ServerProcess(
            extraArgs:
            [
                "--cert-file", Path.Combine(_dir, "kubernetes.pem"), "--key-file", Path.Combine(_dir, "kubernetes-key.pem"),
                "--trusted-ca-file", Path.Combine(_dir, "ca.pem"), "--client-cert-auth",
            ],
            scheme: "https")
        {
            ClientCertDir = _dir,
        };
        await _server.StartAsync();

        var ctl = new Etcdctl(_server);
        (await ctl.OkAsync("put /tls/k secure")).Should().Be("OK\n");
        (await ctl.OkAsync("get /tls/k --print-value-only")).Should().Be("secure\n");
        var health = (await ctl.JsonAsync("endpoint health")).EnumerateArray().Should().ContainSingle().Subject;
        health.GetProperty("health").GetBoolean().Should().BeTrue();

        // Without a client certificate the server refuses (etcdctl gives up at its dial timeout).
        var etcdctl = Tools.Require("etcdctl", "etcd-client");
        var anonymous = await Tools.RunAsync(
            etcdctl,
            ["--endpoints", _server.Endpoint, "--cacert", Path.Combine(_dir, "ca.crt"), "--dial-timeout=3s", "--command-timeout=5s", "get", "/tls/k"],
            env: new Dictionary<string, string> { ["ETCDCTL_API"] = "3" });
        anonymous.ExitCode.Should().NotBe(0, "a client without a certificate must be refused:\n{0}", anonymous);
        anonymous.Stdout.Should().NotContain("secure");
    }

    private async Task<ProcessResult> MakeCertsAsync(params string[] members)
    {
        var bash = Tools.Require("bash", "bash");
        return await Tools.RunAsync(bash, [Script, "-o", _dir, .. members], timeout: TimeSpan.FromSeconds(120));
    }

    private static async Task<string> ExtAsync(string openssl, string crt, string ext)
    {
        var r = await Tools.RunAsync(openssl, ["x509", "-in", crt, "-noout", "-ext", ext]);
        r.ExitCode.Should().Be(0, r.ToString());
        return r.Stdout;
    }

    private static async Task<string> PublicKeyAsync(string openssl, string file, string kind)
    {
        var r = await Tools.RunAsync(openssl, kind == "x509" ? ["x509", "-in", file, "-noout", "-pubkey"] : ["pkey", "-in", file, "-pubout"]);
        r.ExitCode.Should().Be(0, r.ToString());
        return r.Stdout;
    }

    public void Dispose()
    {
        if (_server is not null)
        {
            output.WriteLine("--- server output:");
            output.WriteLine(_server.LogText());
            _server.Dispose();
        }

        ServerProcess.TryDelete(_dir);
    }
}
