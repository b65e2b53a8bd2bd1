using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// Certificate rotation without a restart: the client port's certificate files are replaced while etcdctl keeps
/// working; the next TLS connection gets the new certificate and the member logs the reload.
/// </summary>
public sealed class CertRotationTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = ServerProcess.CreateTempDir("kvstore-e2e-rotate-");
    private ServerProcess? _server;

    [Fact]
    public async Task A_replaced_server_certificate_is_served_to_new_connections_and_the_reload_is_logged()
    {
        await MakeCertsAsync(Path.Combine(_dir, "a"), "e2e=127.0.0.1");
        var live = Path.Combine(_dir, "live");
        Directory.CreateDirectory(live);
        foreach (var f in new[] { "server.crt", "server.key" })
        {
            File.Copy(Path.Combine(_dir, "a", "e2e", f), Path.Combine(live, f));
        }

        _server = new ServerProcess(
            extraArgs:
            [
                "--cert-file", Path.Combine(live, "server.crt"), "--key-file", Path.Combine(live, "server.key"),
                "--trusted-ca-file", Path.Combine(_dir, "a", "ca.crt"), "--client-cert-auth",
            ],
            scheme: "https")
        {
            ClientCertDir = Path.Combine(_dir, "a"),
        };
        await _server.StartAsync();
        var ctl = new Etcdctl(_server);
        (await ctl.OkAsync("put /rotate/k 1")).Should().Be("OK\n");
        var before = await ServerCertificateAsync();

        // Same CA, new key pair: make-certs.sh in a copy of the CA directory issues a fresh server certificate.
        var b = Path.Combine(_dir, "b");
        Directory.CreateDirectory(b);
        File.Copy(Path.Combine(_dir, "a", "ca.crt"), Path.Combine(b, "ca.crt"));
        File.Copy(Path.Combine(_dir, "a", "ca.key"), Path.Combine(b, "ca.key"));
        await MakeCertsAsync(b, "e2e=127.0.0.1");
        var logLine = _server.LogLineCount;
        File.Copy(Path.Combine(b, "e2e", "server.key"), Path.Combine(live, "server.key"), overwrite: true);
        File.Copy(Path.Combine(b, "e2e", "server.crt"), Path.Combine(live, "server.crt"), overwrite: true);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        X509Certificate2 after;
        do
        {
            await Task.Delay(250);
            after = await ServerCertificateAsync();
        }
        while (after.Thumbprint == before.Thumbprint && DateTime.UtcNow < deadline);

        after.Thumbprint.Should().NotBe(before.Thumbprint, "a new connection must see the new certificate without a restart");
        after.Thumbprint.Should().Be(X509CertificateLoader.LoadCertificateFromFile(Path.Combine(b, "e2e", "server.crt")).Thumbprint);
        _server.LogSince(logLine).Should().Contain("client TLS files changed: reloaded certificate");
        (await ctl.OkAsync("get /rotate/k --print-value-only")).Should().Be("1\n", "clients keep working across the rotation");
    }

    /// <summary>The certificate the client port presents to a new TLS connection (with our client certificate).</summary>
    private async Task<X509Certificate2> ServerCertificateAsync()
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", _server!.ClientPort);
        await using var ssl = new SslStream(tcp.GetStream());
        var client = X509Certificate2.CreateFromPemFile(Path.Combine(_dir, "a", "client.crt"), Path.Combine(_dir, "a", "client.key"));
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ClientCertificates = [client],
            RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate is not null && ChainsToCa(certificate),
        });
        return new X509Certificate2(ssl.RemoteCertificate!);
    }

    private bool ChainsToCa(X509Certificate certificate)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.CustomTrustStore.Add(X509CertificateLoader.LoadCertificateFromFile(Path.Combine(_dir, "a", "ca.crt")));
        return chain.Build(new X509Certificate2(certificate));
    }

    private static async Task MakeCertsAsync(string dir, params string[] members)
    {
        var r = await Tools.RunAsync(Tools.Require("bash", "bash"), [Path.Combine(ServerProcess.RepoRoot, "deploy", "certs", "make-certs.sh"), "-o", dir, .. members], timeout: TimeSpan.FromSeconds(120));
        r.ExitCode.Should().Be(0, r.ToString());
    }

    public void Dispose()
    {
        if (_server is not null)
        {
            output.WriteLine(_server.LogText());
            _server.Dispose();
        }

        ServerProcess.TryDelete(_dir);
    }
}
