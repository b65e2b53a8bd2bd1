using System.Net;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.Server.Options;

namespace KvStore.Server.Gateway;

/// <summary>
/// The gateway's gRPC connection to this member's own first client URL (a wildcard host becomes loopback). Over TLS
/// it presents the member's client-port certificate (as etcd's gateway does when client certificates are required)
/// and accepts only the certificate this member serves, which it reaches on a loopback address.
/// </summary>
public sealed class LoopbackChannel : IDisposable
{
    private readonly Lazy<GrpcChannel> _channel;

    public LoopbackChannel(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _channel = new Lazy<GrpcChannel>(() => Create(options));
    }

    public CallInvoker Invoker => _channel.Value.CreateCallInvoker();

    public void Dispose()
    {
        if (_channel.IsValueCreated)
        {
            _channel.Value.Dispose();
        }
    }

    private static GrpcChannel Create(ServerOptions options)
    {
        var url = options.ListenClientUrls[0];
        var host = url.DnsSafeHost switch
        {
            "0.0.0.0" or "localhost" => "127.0.0.1",
            "::" => "[::1]",
            var other when IPAddress.TryParse(other, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 => $"[{other}]",
            var other => other,
        };
        var address = new Uri($"{url.Scheme}://{host}:{url.Port}");
        var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true };
        if (url.Scheme == "https" && options.ClientTls.Enabled)
        {
            // The peer at the other end is this process: it must show the certificate this member serves.
            var own = X509Certificate2.CreateFromPemFile(options.ClientTls.CertFile, options.ClientTls.KeyFile);
            handler.SslOptions.ClientCertificates = [own];
            handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) =>
                presented is not null && presented.GetCertHashString() == own.GetCertHashString();
        }

        return GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            MaxReceiveMessageSize = null,
            MaxSendMessageSize = null,
        });
    }
}
