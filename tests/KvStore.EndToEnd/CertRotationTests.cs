using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// Certificate rotation without a restart: the client port's certificate files are replaced while etcdctl keeps
/// working; the next TLS connection gets the new certificate and the member logs the reload. Connections speaking the
/// wrong protocol for a port are closed and logged.
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

    [Fact]
    public async Task Plain_text_on_a_tls_port_and_tls_on_a_plain_port_are_closed_and_logged()
    {
        await MakeCertsAsync(Path.Combine(_dir, "a"), "e2e=127.0.0.1");
        var m = Path.Combine(_dir, "a", "e2e");
        _server = new ServerProcess(
            extraArgs: ["--cert-file", Path.Combine(m, "server.crt"), "--key-file", Path.Combine(m, "server.key")],
            scheme: "https")
        {
            ClientCertDir = Path.Combine(_dir, "a"),
        };
        await _server.StartAsync();
        var logLine = _server.LogLineCount;

        // HTTP/1.1 in clear text to the TLS client port: closed without an answer.
        using (var plain = new TcpClient())
        {
            await plain.ConnectAsync("127.0.0.1", _server.ClientPort);
            var stream = plain.GetStream();
            await stream.WriteAsync("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
            var buffer = new byte[64];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            (await stream.ReadAsync(buffer, timeout.Token)).Should().Be(0, "the member closes the connection");
        }

        // A TLS ClientHello to the plain-text peer port: the handshake fails at once instead of hanging.
        using (var tls = new TcpClient())
        {
            await tls.ConnectAsync("127.0.0.1", _server.PeerPort);
            await using var ssl = new SslStream(tls.GetStream());
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            var handshake = () => ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "127.0.0.1" }, timeout.Token);
            await handshake.Should().ThrowAsync<Exception>().Where(e => e is IOException || e is System.Security.Authentication.AuthenticationException);
        }

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (DateTime.UtcNow < deadline && !_server.LogSince(logLine).Contains("TLS handshake from 127.0.0.1:", StringComparison.Ordinal))
        {
            await Task.Delay(100);
        }

        var log = _server.LogSince(logLine);
        log.Should().Contain("plain-text (non-TLS) connection from 127.0.0.1:").And.Contain("on the client TLS port: closed");
        log.Should().Contain("TLS handshake from 127.0.0.1:").And.Contain("on the plain-text peer port: closed");
        (await new Etcdctl(_server).OkAsync("put /probe/k ok")).Should().Be("OK\n", "the member keeps serving everyone else");
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
