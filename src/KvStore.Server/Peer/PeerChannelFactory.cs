using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;

namespace KvStore.Server.Peer;

/// <summary>Creates gRPC channels to peer URLs: HTTP/2 (h2c for http://, TLS with an optional client certificate for
/// https://), several connections allowed, dead connections detected with keep-alive PINGs.</summary>
internal static class PeerChannelFactory
{
    /// <param name="url">A peer URL.</param>
    /// <param name="options">Timings and TLS.</param>
    /// <param name="maxReceiveBytes">Largest response accepted (null = no limit); the raft stream's acks are tiny.</param>
    public static GrpcChannel Create(Uri url, PeerTransportOptions options, int? maxReceiveBytes = 1024 * 1024)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = options.DialTimeout,
            KeepAlivePingDelay = options.KeepAlivePingDelay,
            KeepAlivePingTimeout = options.KeepAlivePingTimeout,
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.Always,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
        };
        if (url.Scheme == Uri.UriSchemeHttps && options.Tls is { } tls)
        {
            handler.SslOptions = CreateSslOptions(tls);
        }

        return GrpcChannel.ForAddress(url, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxSendMessageSize = null,
            MaxReceiveMessageSize = maxReceiveBytes,
        });
    }

    internal static SslClientAuthenticationOptions CreateSslOptions(PeerTlsOptions tls)
    {
        var material = tls.Material;
        var ssl = new SslClientAuthenticationOptions
        {
            EnabledSslProtocols = tls.Protocols,
            CipherSuitesPolicy = tls.CipherSuites,

            // Asked per connection, so a rotated certificate is presented from the next connection on.
            LocalCertificateSelectionCallback = (_, _, _, _, _) => material.Current.Certificate,
        };
        ssl.RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
        {
            if (tls.SkipVerification)
            {
                return certificate is not null;
            }

            var roots = material.Current.Roots;
            if (roots.Count == 0)
            {
                return errors == SslPolicyErrors.None;
            }

            if (certificate is null || (errors & (SslPolicyErrors.RemoteCertificateNotAvailable | SslPolicyErrors.RemoteCertificateNameMismatch)) != 0)
            {
                return false;
            }

            using var custom = new X509Chain();
            custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            custom.ChainPolicy.CustomTrustStore.AddRange(roots);
            if (chain is not null)
            {
                foreach (var element in chain.ChainElements)
                {
                    custom.ChainPolicy.ExtraStore.Add(element.Certificate);
                }
            }

            if (certificate is X509Certificate2 full)
            {
                return custom.Build(full);
            }

            using var loaded = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
            return custom.Build(loaded);
        };

        return ssl;
    }
}
