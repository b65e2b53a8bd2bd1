using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using KvStore.Server.Options;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting.Tls;

/// <summary>
/// One port's certificate, key, trusted CAs and CRL, re-read when any of the files changes (checked at most once a
/// second, on the next handshake), so new connections see a rotated certificate, CA bundle or CRL without a restart;
/// connections already open keep theirs. A file caught half-written keeps the previous material and is retried.
/// </summary>
public sealed class TlsMaterial
{
    private static readonly TimeSpan CheckEvery = TimeSpan.FromSeconds(1);
    private readonly TlsOptions _files;
    private readonly string _port;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly object _lock = new();
    private Loaded _current;
    private long _checkedAt;

    public TlsMaterial(TlsOptions files, string port, ILogger logger, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(files);
        _files = files;
        _port = port;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        try
        {
            _current = Load(files);
        }
        catch (Exception e) when (e is IOException or CryptographicException or UnauthorizedAccessException or AsnContentException)
        {
            throw new OptionsException($"cannot load the {port} TLS files ({files.CertFile}, {files.KeyFile}, CA {files.TrustedCaFile}, CRL {files.CrlFile}): {e.Message}", e);
        }

        _checkedAt = _time.GetTimestamp();
    }

    /// <summary>The material for a new connection (reloaded first if a file changed).</summary>
    public Loaded Current
    {
        get
        {
            if (_time.GetElapsedTime(Volatile.Read(ref _checkedAt)) < CheckEvery)
            {
                return Volatile.Read(ref _current);
            }

            lock (_lock)
            {
                if (_time.GetElapsedTime(_checkedAt) >= CheckEvery)
                {
                    _checkedAt = _time.GetTimestamp();
                    if (Stamps(_files) != _current.Stamps)
                    {
                        TryReload();
                    }
                }

                return _current;
            }
        }
    }

    private void TryReload()
    {
        try
        {
            var loaded = Load(_files);
            Volatile.Write(ref _current, loaded);
            TlsLog.Reloaded(_logger, _port, loaded.Certificate.Subject, loaded.Certificate.NotAfter, loaded.Roots.Count, loaded.Revoked.Count);
        }
        catch (Exception e) when (e is IOException or CryptographicException or UnauthorizedAccessException or AsnContentException or FormatException)
        {
            TlsLog.ReloadFailed(_logger, _port, e.Message);
        }
    }

    private static Loaded Load(TlsOptions files)
    {
        var stamps = Stamps(files);
        var certificate = X509Certificate2.CreateFromPemFile(files.CertFile, files.KeyFile);
        var roots = new X509Certificate2Collection();
        if (files.TrustedCaFile.Length > 0)
        {
            roots.ImportFromPemFile(files.TrustedCaFile);
        }

        var revoked = files.CrlFile.Length > 0 ? ReadCrl(File.ReadAllBytes(files.CrlFile)) : [];
        return new Loaded(certificate, roots, revoked, stamps);
    }

    private static string Stamps(TlsOptions files) => string.Join(
        '|',
        new[] { files.CertFile, files.KeyFile, files.TrustedCaFile, files.CrlFile }
            .Select(f => f.Length == 0 ? "-" : File.Exists(f) ? File.GetLastWriteTimeUtc(f).Ticks + ":" + new FileInfo(f).Length : "missing"));

    /// <summary>Serial numbers (hex, as encoded) listed by a PEM or DER X.509 CRL. The CRL is the operator's file and is
    /// trusted as given (etcd does not verify its signature either).</summary>
    internal static HashSet<string> ReadCrl(byte[] data)
    {
        var text = System.Text.Encoding.ASCII.GetString(data);
        var der = text.Contains("-----BEGIN X509 CRL-----", StringComparison.Ordinal)
            ? Convert.FromBase64String(text[PemEncoding.Find(text).Base64Data])
            : data;
        var serials = new HashSet<string>(StringComparer.Ordinal);
        var crl = new AsnReader(der, AsnEncodingRules.DER).ReadSequence();
        var tbs = crl.ReadSequence();
        if (tbs.PeekTag().HasSameClassAndValue(Asn1Tag.Integer))
        {
            tbs.ReadInteger(); // version
        }

        tbs.ReadSequence(); // signature algorithm
        tbs.ReadSequence(); // issuer
        tbs.ReadEncodedValue(); // thisUpdate
        if (tbs.HasData && (tbs.PeekTag().HasSameClassAndValue(Asn1Tag.UtcTime) || tbs.PeekTag().HasSameClassAndValue(Asn1Tag.GeneralizedTime)))
        {
            tbs.ReadEncodedValue(); // nextUpdate
        }

        if (tbs.HasData && tbs.PeekTag().HasSameClassAndValue(Asn1Tag.Sequence))
        {
            var entries = tbs.ReadSequence();
            while (entries.HasData)
            {
                var entry = entries.ReadSequence();
                serials.Add(Convert.ToHexString(entry.ReadIntegerBytes().Span));
            }
        }

        return serials;
    }

    /// <summary>Material as loaded at one moment.</summary>
    public sealed record Loaded(X509Certificate2 Certificate, X509Certificate2Collection Roots, HashSet<string> Revoked, string Stamps)
    {
        public bool IsRevoked(X509Certificate2 certificate) => Revoked.Contains(Convert.ToHexString(certificate.SerialNumberBytes.Span));
    }
}
