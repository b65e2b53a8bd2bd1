using System.Collections;
using System.Net.Security;
using System.Numerics;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using KvStore.Server.Hosting.Tls;
using KvStore.Server.Options;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Hosting;

/// <summary>TLS flags, client-certificate checks (CA, expiry, CRL, allowed CN/host name) and reloading of rotated files.</summary>
public sealed class TlsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvstore-tls-").FullName;
    private readonly ECDsa _caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly X509Certificate2 _ca;

    public TlsTests()
    {
        var request = new CertificateRequest("CN=test CA", _caKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        _ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-30), DateTimeOffset.UtcNow.AddYears(1));
        File.WriteAllText(Path.Combine(_dir, "ca.crt"), _ca.ExportCertificatePem());
    }

    public void Dispose()
    {
        _caKey.Dispose();
        _ca.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Versions_and_cipher_suites_follow_etcds_flags()
    {
        var defaults = TlsPolicy.From(Parse());
        defaults.Protocols.Should().Be(SslProtocols.Tls12 | SslProtocols.Tls13, "TLS 1.2 minimum by default");
        defaults.CipherSuitesPolicy.Should().BeNull();

        var pinned = TlsPolicy.From(Parse("--tls-max-version=TLS1.2", "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
        pinned.Protocols.Should().Be(SslProtocols.Tls12);
        pinned.CipherSuites.Should().Equal(TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
        TlsPolicy.From(Parse("--tls-min-version=TLS1.3")).Protocols.Should().Be(SslProtocols.Tls13);
    }

    [Theory]
    [InlineData("--tls-min-version=TLS1.1", "*unexpected TLS version \"TLS1.1\"*")]
    [InlineData("--tls-max-version=SSL3", "*unexpected TLS version \"SSL3\"*")]
    [InlineData("--cipher-suites=TLS_RSA_WITH_RC4_128_MD5X", "*unexpected TLS cipher suite \"TLS_RSA_WITH_RC4_128_MD5X\"*")]
    public void Bad_tls_flags_fail_at_start(string arg, string message)
    {
        var act = () => Parse(arg);
        act.Should().Throw<OptionsException>().WithMessage(message);
    }

    [Fact]
    public void Min_above_max_and_suites_with_only_tls13_are_refused()
    {
        ((Action)(() => Parse("--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"))).Should().Throw<OptionsException>().WithMessage("*greater than max*");
        ((Action)(() => Parse("--tls-min-version=TLS1.3", "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"))).Should().Throw<OptionsException>()
            .WithMessage("cipher suites cannot be configured when only TLS1.3 is enabled");
    }

    [Fact]
    public void Client_certificates_are_checked_against_ca_expiry_crl_and_allowed_names()
    {
        var good = Issue("CN=m1", ["127.0.0.1", "m1.example"], serial: 10);
        var revoked = Issue("CN=m2", ["127.0.0.1"], serial: 11);
        var expired = Issue("CN=m3", ["127.0.0.1"], serial: 12, notAfter: DateTimeOffset.UtcNow.AddDays(-1));
        using var otherKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var foreign = new CertificateRequest("CN=m1", otherKey, HashAlgorithmName.SHA256).CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        WriteCrl(revoked);

        var tls = Server(allowedCn: string.Empty, allowedHost: string.Empty);
        var material = new TlsMaterial(Files(), "peer", NullLogger.Instance).Current;
        tls.Check(material, good, null).Should().BeNull();
        tls.Check(material, null, null).Should().Be("no client certificate");
        tls.Check(material, foreign, null).Should().Contain("not accepted (");
        tls.Check(material, expired, null).Should().Contain("NotTimeValid");
        tls.Check(material, revoked, null).Should().Contain("revoked by the CRL");

        Server("m1", string.Empty).Check(material, good, null).Should().BeNull();
        Server("m9", string.Empty).Check(material, good, null).Should().Contain("matches neither the allowed CN 'm9'");
        Server(string.Empty, "m1.example").Check(material, good, null).Should().BeNull();
        Server(string.Empty, "127.0.0.1").Check(material, good, null).Should().BeNull();
        Server("m9", "m1.example").Check(material, good, null).Should().BeNull("either the CN or the host name may match, as in etcd");
        Server(string.Empty, "other.example").Check(material, good, null).Should().NotBeNull();
    }

    [Fact]
    public void Rotated_files_are_seen_by_the_next_connection_a_second_later()
    {
        var time = new Lease.ManualTimeProvider();
        var first = Issue("CN=server-1", ["127.0.0.1"], serial: 20);
        WriteServerPair(first);
        var material = new TlsMaterial(Files(), "client", NullLogger.Instance, time);
        material.Current.Certificate.Subject.Should().Be("CN=server-1");

        var second = Issue("CN=server-2", ["127.0.0.1"], serial: 21);
        WriteServerPair(second);
        File.SetLastWriteTimeUtc(Path.Combine(_dir, "server.crt"), DateTime.UtcNow.AddSeconds(5));
        material.Current.Certificate.Subject.Should().Be("CN=server-1", "files are looked at no more than once a second");
        time.Advance(TimeSpan.FromSeconds(2));
        material.Current.Certificate.Subject.Should().Be("CN=server-2");

        File.WriteAllText(Path.Combine(_dir, "server.crt"), "-----BEGIN CERTIFICATE-----\nhalf written");
        time.Advance(TimeSpan.FromSeconds(2));
        material.Current.Certificate.Subject.Should().Be("CN=server-2", "a broken file keeps the previous certificate");
    }

    [Fact]
    public void Outgoing_certificate_flags_come_in_pairs_and_the_client_host_name_needs_client_cert_auth()
    {
        var options = Parse("--client-cert-file=c.crt", "--client-key-file=c.key", "--peer-client-cert-file=p.crt", "--peer-client-key-file=p.key");
        (options.ClientTls.Outgoing().CertFile, options.ClientTls.Outgoing().KeyFile).Should().Be(("c.crt", "c.key"));
        (options.PeerTls.Outgoing().CertFile, options.PeerTls.Outgoing().KeyFile).Should().Be(("p.crt", "p.key"));
        Parse("--peer-cert-file=s.crt", "--peer-key-file=s.key").PeerTls.Outgoing().CertFile.Should().Be("s.crt", "without a client certificate the listener's is presented");
        ((Action)(() => Parse("--client-cert-file=c.crt"))).Should().Throw<OptionsException>().WithMessage("--client-cert-file and --client-key-file must be given together");
        ((Action)(() => Parse("--peer-client-key-file=p.key"))).Should().Throw<OptionsException>().WithMessage("--peer-client-cert-file and --peer-client-key-file must be given together");
        ((Action)(() => Parse("--client-cert-allowed-hostname=app.example"))).Should().Throw<OptionsException>().WithMessage("--client-cert-allowed-hostname requires --client-cert-auth*");
        Parse("--client-cert-auth", "--trusted-ca-file=ca.crt", "--client-cert-allowed-hostname=app.example").ClientTls.AllowedHostname.Should().Be("app.example");
    }

    [Fact]
    public async Task Outgoing_peer_connections_present_the_peer_client_certificate_and_a_rotated_one_from_the_next_connection()
    {
        WriteServerPair(Issue("CN=listener", ["127.0.0.1"], serial: 30));
        WritePair("client", Issue("CN=outgoing-1", ["127.0.0.1"], serial: 31));
        const string Url = "https://127.0.0.1:2380";
        var options = Parse(
            "--listen-peer-urls=" + Url, "--initial-advertise-peer-urls=" + Url, "--initial-cluster=default=" + Url,
            "--peer-cert-file=" + Path.Combine(_dir, "server.crt"), "--peer-key-file=" + Path.Combine(_dir, "server.key"),
            "--peer-trusted-ca-file=" + Path.Combine(_dir, "ca.crt"), "--peer-client-cert-auth",
            "--peer-client-cert-file=" + Path.Combine(_dir, "client.crt"), "--peer-client-key-file=" + Path.Combine(_dir, "client.key"));
        KvStore.Server.Replication.ReplicationServiceCollectionExtensions.PeerTls(options)!.Material.Current.Certificate.Subject.Should().Be("CN=outgoing-1");

        var time = new Lease.ManualTimeProvider();
        var outgoing = new KvStore.Server.Peer.PeerTlsOptions(new TlsMaterial(options.PeerTls.Outgoing(), "outgoing peer", NullLogger.Instance, time));
        var listener = new ServerTls(options.PeerTls, TlsPolicy.From(options), "peer", NullLogger.Instance);
        (await HandshakeAsync(listener, outgoing)).Should().Be("CN=outgoing-1", "the listener sees the peer client certificate, not the listener's own");

        WritePair("client", Issue("CN=outgoing-2", ["127.0.0.1"], serial: 32));
        File.SetLastWriteTimeUtc(Path.Combine(_dir, "client.crt"), DateTime.UtcNow.AddSeconds(5));
        time.Advance(TimeSpan.FromSeconds(2));
        (await HandshakeAsync(listener, outgoing)).Should().Be("CN=outgoing-2", "the rotated file is presented from the next connection on, without a restart");
    }

    [Fact]
    public async Task Auto_tls_makes_a_self_signed_certificate_in_fixtures_once_and_peers_accept_it_unverified()
    {
        const string Url = "https://127.0.0.1:2380";
        var options = Parse(
            "--data-dir=" + Path.Combine(_dir, "data"), "--listen-peer-urls=" + Url, "--initial-advertise-peer-urls=" + Url,
            "--initial-cluster=default=" + Url, "--peer-auto-tls", "--auto-tls", "--self-signed-cert-validity=2",
            "--listen-client-urls=https://localhost:2379", "--advertise-client-urls=https://localhost:2379");
        AutoTls.Apply(options, NullLogger.Instance);
        var peerCert = Path.Combine(_dir, "data", "fixtures", "peer", "cert.pem");
        options.PeerTls.CertFile.Should().Be(peerCert);
        options.ClientTls.CertFile.Should().Be(Path.Combine(_dir, "data", "fixtures", "client", "cert.pem"));
        using var made = X509Certificate2.CreateFromPemFile(peerCert, options.PeerTls.KeyFile);
        made.Subject.Should().Be("O=etcd");
        made.NotAfter.Should().BeAfter(DateTime.UtcNow.AddYears(2).AddDays(-1)).And.BeBefore(DateTime.UtcNow.AddYears(2).AddDays(1));
        made.MatchesHostname("127.0.0.1").Should().BeTrue();
        X509Certificate2.CreateFromPemFile(options.ClientTls.CertFile, options.ClientTls.KeyFile).MatchesHostname("localhost").Should().BeTrue();
        if (!OperatingSystem.IsWindows())
        {
            File.GetUnixFileMode(options.PeerTls.KeyFile).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        var again = Parse("--data-dir=" + Path.Combine(_dir, "data"), "--peer-auto-tls", "--listen-peer-urls=" + Url, "--initial-advertise-peer-urls=" + Url, "--initial-cluster=default=" + Url);
        AutoTls.Apply(again, NullLogger.Instance);
        (await File.ReadAllTextAsync(again.PeerTls.CertFile)).Should().Be(made.ExportCertificatePem(), "a later start reuses the certificate");

        var outgoing = KvStore.Server.Replication.ReplicationServiceCollectionExtensions.PeerTls(options)!;
        outgoing.SkipVerification.Should().BeTrue("a self-signed peer certificate proves nothing to verify, as in etcd");
        var listener = new ServerTls(options.PeerTls, TlsPolicy.From(options), "peer", NullLogger.Instance);
        (await HandshakeAsync(listener, outgoing)).Should().Be("(no client certificate)", "the handshake completes against the self-signed listener without a CA");

        var given = Parse("--peer-auto-tls", "--peer-cert-file=x.crt", "--peer-key-file=x.key");
        AutoTls.Apply(given, NullLogger.Instance);
        (given.PeerTls.CertFile, given.PeerTls.AutoTls).Should().Be(("x.crt", false), "given files win over auto TLS, as in etcd");
    }

    /// <summary>One TLS handshake over loopback: the listener's options against the outgoing side's; returns the client certificate the listener saw (if it asked for one).</summary>
    private static async Task<string> HandshakeAsync(ServerTls listener, KvStore.Server.Peer.PeerTlsOptions outgoing)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var port = LoopbackPorts.TakeOne();
        var tcp = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
        tcp.Start();
        try
        {
            var accept = tcp.AcceptTcpClientAsync(timeout.Token).AsTask();
            using var client = new System.Net.Sockets.TcpClient();
            await client.ConnectAsync(System.Net.IPAddress.Loopback, port, timeout.Token);
            using var serverSide = await accept;
            await using var serverStream = new SslStream(serverSide.GetStream());
            await using var clientStream = new SslStream(client.GetStream());
            var clientOptions = KvStore.Server.Peer.PeerChannelFactory.CreateSslOptions(outgoing);
            clientOptions.TargetHost = "127.0.0.1";
            await Task.WhenAll(
                serverStream.AuthenticateAsServerAsync(listener.Options("test"), timeout.Token),
                clientStream.AuthenticateAsClientAsync(clientOptions, timeout.Token));
            return serverStream.RemoteCertificate?.Subject ?? "(no client certificate)";
        }
        finally
        {
            tcp.Stop();
        }
    }

    private void WritePair(string name, X509Certificate2 certificate)
    {
        File.WriteAllText(Path.Combine(_dir, name + ".crt"), certificate.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_dir, name + ".key"), certificate.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
    }

    private ServerTls Server(string allowedCn, string allowedHost) =>
        new(Files(allowedCn, allowedHost), TlsPolicy.From(Parse()), "peer", NullLogger.Instance);

    private TlsOptions Files(string allowedCn = "", string allowedHost = "")
    {
        if (!File.Exists(Path.Combine(_dir, "server.crt")))
        {
            WriteServerPair(Issue("CN=server", ["127.0.0.1"], serial: 1));
        }

        return new TlsOptions
        {
            CertFile = Path.Combine(_dir, "server.crt"),
            KeyFile = Path.Combine(_dir, "server.key"),
            TrustedCaFile = Path.Combine(_dir, "ca.crt"),
            CrlFile = File.Exists(Path.Combine(_dir, "ca.crl")) ? Path.Combine(_dir, "ca.crl") : string.Empty,
            ClientCertAuth = true,
            AllowedCn = allowedCn,
            AllowedHostname = allowedHost,
        };
    }

    private void WriteServerPair(X509Certificate2 certificate)
    {
        File.WriteAllText(Path.Combine(_dir, "server.crt"), certificate.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_dir, "server.key"), certificate.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
    }

    private void WriteCrl(X509Certificate2 revoked)
    {
        var builder = new CertificateRevocationListBuilder();
        builder.AddEntry(revoked);
        var crl = builder.Build(_ca, BigInteger.One, DateTimeOffset.UtcNow.AddDays(7), HashAlgorithmName.SHA256);
        File.WriteAllText(Path.Combine(_dir, "ca.crl"), PemEncoding.WriteString("X509 CRL", crl));
        TlsMaterial.ReadCrl(crl).Should().ContainSingle().Which.Should().Be(Convert.ToHexString(revoked.SerialNumberBytes.Span), "DER and PEM read alike");
    }

    private X509Certificate2 Issue(string subject, string[] names, int serial, DateTimeOffset? notAfter = null)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        foreach (var name in names)
        {
            if (System.Net.IPAddress.TryParse(name, out var ip))
            {
                san.AddIpAddress(ip);
            }
            else
            {
                san.AddDnsName(name);
            }
        }

        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        var end = notAfter ?? DateTimeOffset.UtcNow.AddDays(30);
        using var issued = request.Create(_ca, notAfter is null ? DateTimeOffset.UtcNow.AddDays(-1) : end.AddDays(-2), end, BitConverter.GetBytes(serial).Reverse().ToArray());
        return issued.CopyWithPrivateKey(key);
    }

    private static ServerOptions Parse(params string[] args) => FlagParser.Parse(args, new Hashtable()).Options;
}
