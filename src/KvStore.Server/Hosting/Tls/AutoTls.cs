using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using KvStore.Server.Options;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting.Tls;

/// <summary>
/// --auto-tls / --peer-auto-tls as etcd does them: when a port has no certificate of its own, a self-signed one is made
/// in data-dir/fixtures/client or data-dir/fixtures/peer (cert.pem, key.pem; kept and reused on later starts), valid
/// --self-signed-cert-validity years for the hosts of the port's listen URLs. Such certificates prove nothing about who
/// is on the other end, so the member does not verify its peers' self-signed certificates either (etcd skips the
/// verification the same way). Given certificate files win over the flag (logged).
/// </summary>
public static partial class AutoTls
{
    /// <summary>Fills in the certificate files of each port that asks for auto TLS and has none.</summary>
    public static void Apply(ServerOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        Apply(options.ClientTls, options.ListenClientUrls, Path.Combine(options.EffectiveDataDir, "fixtures", "client"), "client", options.SelfSignedCertValidityYears, logger);
        Apply(options.PeerTls, options.ListenPeerUrls, Path.Combine(options.EffectiveDataDir, "fixtures", "peer"), "peer", options.SelfSignedCertValidityYears, logger);
    }

    private static void Apply(TlsOptions port, IReadOnlyList<Uri> urls, string directory, string name, ulong years, ILogger logger)
    {
        if (!port.AutoTls)
        {
            return;
        }

        if (port.Enabled)
        {
            IgnoredBecauseCertsGiven(logger, name);
            port.AutoTls = false;
            return;
        }

        var cert = Path.Combine(directory, "cert.pem");
        var key = Path.Combine(directory, "key.pem");
        if (!File.Exists(cert) || !File.Exists(key))
        {
            Directory.CreateDirectory(directory);
            Write(cert, key, urls.Select(u => u.Host), years);
            Generated(logger, name, cert);
        }

        port.CertFile = cert;
        port.KeyFile = key;
    }

    /// <summary>A self-signed server+client certificate (ECDSA P-256) for <paramref name="hosts"/>.</summary>
    internal static void Write(string certFile, string keyFile, IEnumerable<string> hosts, ulong years)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("O=etcd", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        foreach (var host in hosts.Distinct(StringComparer.OrdinalIgnoreCase))
        {
            if (IPAddress.TryParse(host.Trim('[', ']'), out var ip))
            {
                san.AddIpAddress(ip);
            }
            else
            {
                san.AddDnsName(host);
            }
        }

        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        var now = DateTimeOffset.UtcNow;
        using var certificate = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears((int)Math.Clamp(years, 1UL, 100UL)));

        // The key first, readable by the owner only; the certificate last, so a crash never leaves a certificate without its key.
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        File.WriteAllText(certFile, certificate.ExportCertificatePem());
    }

    [LoggerMessage(EventId = 3110, Level = LogLevel.Warning, Message = "ignoring {Port} auto TLS since certificate files are given")]
    private static partial void IgnoredBecauseCertsGiven(ILogger logger, string port);

    [LoggerMessage(EventId = 3111, Level = LogLevel.Information, Message = "{Port} auto TLS: using the self-signed certificate {File}")]
    private static partial void Generated(ILogger logger, string port, string file);
}
