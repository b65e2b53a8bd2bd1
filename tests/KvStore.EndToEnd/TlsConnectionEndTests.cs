using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// How a TLS client connection ends when the client closes its side (TLS close_notify, then a FIN): the server must
/// close with a FIN, as etcd does, and never with a TCP reset — also while a watch stream is still open on the
/// connection. A TLS-terminating proxy in front of the server (a Node.js proxy, for one) reports a reset as
/// ECONNRESET and fails the client's reconnect. The client here speaks raw HTTP/2 over TLS so the test controls
/// exactly when close_notify and the FIN go out and sees exactly how the server's side ends.
/// </summary>
public sealed class TlsConnectionEndTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private static readonly byte[] Preface = Encoding.ASCII.GetBytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

    private readonly string _pki = ServerProcess.CreateTempDir("kvstore-e2e-tls-end-");
    private ServerProcess? _server;

    private enum ServerEnd
    {
        Fin,
        Reset,
        StillOpen,
    }

    [Fact]
    public async Task A_client_that_closes_with_a_watch_open_gets_a_fin_not_a_reset()
    {
        await StartTlsServerAsync();

        // Several connections in a row: the reset came from a race-free path, but a regression could be timing-bound.
        for (var i = 0; i < 3; i++)
        {
            (await OpenWatchThenCloseAsync(watch: true)).Should().Be(ServerEnd.Fin, "connection {0} had a watch stream open when the client closed", i);
        }

        (await OpenWatchThenCloseAsync(watch: false)).Should().Be(ServerEnd.Fin, "an idle connection ends the same way");

        // The member still serves after the aborted watches.
        var ctl = new Etcdctl(_server!);
        (await ctl.OkAsync("put /tls-end/k v")).Should().Be("OK\n");
    }

    private async Task StartTlsServerAsync()
    {
        var bash = Tools.Require("bash", "bash");
        Tools.Require("openssl", "openssl");
        var certs = await Tools.RunAsync(bash, [Path.Combine(ServerProcess.RepoRoot, "deploy", "certs", "make-certs.sh"), "-o", _pki, "e2e=127.0.0.1"], timeout: TimeSpan.FromSeconds(120));
        certs.ExitCode.Should().Be(0, certs.ToString());
        _server = new ServerProcess(
            extraArgs:
            [
                "--cert-file", Path.Combine(_pki, "e2e", "server.crt"), "--key-file", Path.Combine(_pki, "e2e", "server.key"),
                "--trusted-ca-file", Path.Combine(_pki, "ca.crt"), "--client-cert-auth",
            ],
            scheme: "https")
        {
            ClientCertDir = _pki,
        };
        await _server.StartAsync();
    }

    /// <summary>
    /// Opens an HTTP/2 connection over mutual TLS, optionally starts a Watch and waits for its "created" response,
    /// then sends close_notify and a FIN and reports how the server's side of the TCP connection ends.
    /// </summary>
    private async Task<ServerEnd> OpenWatchThenCloseAsync(bool watch)
    {
        using var timeout = new CancellationTokenSource(Bound);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", _server!.ClientPort, timeout.Token);
        await using var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: true);
        var ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(_pki, "ca.crt"));
        await tls.AuthenticateAsClientAsync(
            new SslClientAuthenticationOptions
            {
                TargetHost = "127.0.0.1",
                ApplicationProtocols = [SslApplicationProtocol.Http2],
                ClientCertificates = [X509Certificate2.CreateFromPemFile(Path.Combine(_pki, "client.crt"), Path.Combine(_pki, "client.key"))],
                CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, CustomTrustStore = { ca }, RevocationMode = X509RevocationMode.NoCheck },
            },
            timeout.Token);
        tls.NegotiatedApplicationProtocol.Should().Be(SslApplicationProtocol.Http2);

        await tls.WriteAsync(Preface, timeout.Token);
        await WriteFrameAsync(tls, type: 4, flags: 0, stream: 0, [], timeout.Token); // SETTINGS (defaults)
        if (watch)
        {
            await WriteFrameAsync(tls, type: 1, flags: 0x4, stream: 1, WatchRequestHeaders(), timeout.Token); // HEADERS, END_HEADERS
            await WriteFrameAsync(tls, type: 0, flags: 0, stream: 1, WatchCreateMessage("/tls-end/k"), timeout.Token); // DATA
            await ReadUntilDataOnStreamAsync(tls, stream: 1, timeout.Token);
        }
        else
        {
            await ReadUntilDataOnStreamAsync(tls, stream: 0, timeout.Token); // the server's SETTINGS
        }

        await tls.ShutdownAsync(); // close_notify
        tcp.Client.Shutdown(SocketShutdown.Send); // FIN
        var end = await ReadServerEndAsync(tcp.Client, timeout.Token);
        output.WriteLine($"watch={watch}: the server ended with {end}");
        return end;
    }

    /// <summary>Reads frames (answering SETTINGS with an ACK) until a DATA frame on <paramref name="stream"/>, or with stream 0 the server's first SETTINGS.</summary>
    private static async Task ReadUntilDataOnStreamAsync(SslStream tls, int stream, CancellationToken token)
    {
        var header = new byte[9];
        while (true)
        {
            await tls.ReadExactlyAsync(header, token);
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            var (type, flags) = (header[3], header[4]);
            var id = (int)(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(5)) & 0x7fffffff);
            var payload = new byte[length];
            await tls.ReadExactlyAsync(payload, token);
            if (type == 4 && (flags & 0x1) == 0)
            {
                await WriteFrameAsync(tls, type: 4, flags: 0x1, stream: 0, [], token); // SETTINGS ACK
                if (stream == 0)
                {
                    return;
                }
            }

            type.Should().NotBe((byte)3, "the watch stream must not be reset (RST_STREAM)");
            type.Should().NotBe((byte)7, "the server must not end the connection before the client closes (GOAWAY)");
            if (type == 0 && id == stream)
            {
                return;
            }
        }
    }

    /// <summary>Reads the raw TCP stream (the TLS records after close_notify do not matter) until the server's FIN or reset.</summary>
    private static async Task<ServerEnd> ReadServerEndAsync(Socket socket, CancellationToken token)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, token) > 0)
            {
            }

            return ServerEnd.Fin;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
            return ServerEnd.Reset;
        }
        catch (OperationCanceledException)
        {
            return ServerEnd.StillOpen;
        }
    }

    private static async Task WriteFrameAsync(Stream tls, byte type, byte flags, int stream, byte[] payload, CancellationToken token)
    {
        await tls.WriteAsync(Http2Frames.Frame(type, flags, (uint)stream, payload), token);
        await tls.FlushAsync(token);
    }

    /// <summary>The request head of a Watch call in HPACK: static-table entries and literals without indexing or Huffman.</summary>
    private static byte[] WatchRequestHeaders()
    {
        var block = new MemoryStream();
        block.WriteByte(0x83); // :method POST (static 3)
        block.WriteByte(0x87); // :scheme https (static 7)
        Literal(block, nameIndex: 4, "/etcdserverpb.Watch/Watch"); // :path
        Literal(block, nameIndex: 1, "127.0.0.1"); // :authority
        Literal(block, nameIndex: 31, "application/grpc"); // content-type
        block.WriteByte(0x00); // a literal with a new name: te
        String(block, "te");
        String(block, "trailers");
        return block.ToArray();

        static void Literal(MemoryStream block, int nameIndex, string value)
        {
            // "Literal Header Field without Indexing — Indexed Name": a 4-bit prefix integer.
            if (nameIndex < 15)
            {
                block.WriteByte((byte)nameIndex);
            }
            else
            {
                block.WriteByte(0x0f);
                block.WriteByte((byte)(nameIndex - 15));
            }

            String(block, value);
        }

        static void String(MemoryStream block, string value)
        {
            var bytes = Encoding.ASCII.GetBytes(value);
            bytes.Length.Should().BeLessThan(127, "a one-byte length prefix");
            block.WriteByte((byte)bytes.Length);
            block.Write(bytes);
        }
    }

    /// <summary>A gRPC-framed WatchRequest { create_request { key } } (field 1 in both messages).</summary>
    private static byte[] WatchCreateMessage(string key)
    {
        var k = Encoding.ASCII.GetBytes(key);
        byte[] create = [0x0a, (byte)k.Length, .. k];
        byte[] request = [0x0a, (byte)create.Length, .. create];
        return [0, 0, 0, 0, (byte)request.Length, .. request];
    }

    public void Dispose()
    {
        if (_server is not null)
        {
            output.WriteLine("--- server output:");
            output.WriteLine(_server.LogText());
            _server.Dispose();
        }

        ServerProcess.TryDelete(_pki);
    }
}
