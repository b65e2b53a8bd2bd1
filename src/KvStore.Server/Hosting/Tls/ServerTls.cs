using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using KvStore.Server.Options;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting.Tls;

/// <summary>
/// The server side of one port's TLS, decided per handshake: the current (possibly reloaded) certificate, the TLS
/// versions and cipher suites of <see cref="TlsPolicy"/>, and with client-certificate authentication a client
/// certificate that chains to the trusted CAs, is not expired, is not in the CRL and (peer port) carries the allowed
/// CN or host name. A refused handshake is logged once, with the remote address and the reason.
/// </summary>
public sealed class ServerTls
{
    private readonly TlsMaterial _material;
    private readonly TlsPolicy _policy;
    private readonly TlsOptions _options;
    private readonly string _port;
    private readonly ILogger _logger;

    public ServerTls(TlsOptions options, TlsPolicy policy, string port, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _policy = policy;
        _port = port;
        _logger = logger;
        _material = new TlsMaterial(options, port, logger);
    }

    /// <summary>Kestrel's per-connection hook.</summary>
    public TlsHandshakeCallbackOptions ToCallbackOptions() => new()
    {
        OnConnection = context => ValueTask.FromResult(Options(context.Connection.RemoteEndPoint?.ToString() ?? "unknown")),
    };

    internal SslServerAuthenticationOptions Options(string remote)
    {
        var material = _material.Current;
        var options = new SslServerAuthenticationOptions
        {
            ServerCertificate = material.Certificate,
            EnabledSslProtocols = _policy.Protocols,
            CipherSuitesPolicy = _policy.CipherSuitesPolicy,
            ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
            ClientCertificateRequired = _options.ClientCertAuth,
        };
        if (_options.ClientCertAuth)
        {
            options.RemoteCertificateValidationCallback = (_, certificate, chain, _) =>
            {
                var reason = Check(material, certificate, chain);
                if (reason is not null)
                {
                    TlsLog.Refused(_logger, remote, _port, reason);
                }

                return reason is null;
            };
        }

        return options;
    }

    /// <summary>Null when the client certificate is acceptable, else why not.</summary>
    internal string? Check(TlsMaterial.Loaded material, X509Certificate? presented, X509Chain? presentedChain)
    {
        if (presented is null)
        {
            return "no client certificate";
        }

        using var owned = presented as X509Certificate2 is null ? X509CertificateLoader.LoadCertificate(presented.GetRawCertData()) : null;
        var certificate = owned ?? (X509Certificate2)presented;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.CustomTrustStore.AddRange(material.Roots);
        if (presentedChain is not null)
        {
            foreach (var element in presentedChain.ChainElements)
            {
                chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        if (!chain.Build(certificate))
        {
            var status = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
            return $"client certificate {certificate.Subject} not accepted ({status})";
        }

        if (material.IsRevoked(certificate))
        {
            return $"client certificate {certificate.Subject} (serial {certificate.SerialNumber}) is revoked by the CRL";
        }

        if (_options.AllowedCn.Length == 0 && _options.AllowedHostname.Length == 0)
        {
            return null;
        }

        var cnAllowed = _options.AllowedCn.Length > 0 && certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false) == _options.AllowedCn;
        var hostAllowed = _options.AllowedHostname.Length > 0 && certificate.MatchesHostname(_options.AllowedHostname);
        return cnAllowed || hostAllowed
            ? null
            : $"client certificate {certificate.Subject} matches neither the allowed CN '{_options.AllowedCn}' nor the allowed host name '{_options.AllowedHostname}'";
    }
}
