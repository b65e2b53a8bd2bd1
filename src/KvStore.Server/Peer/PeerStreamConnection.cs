using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using KvStore.Raft.Wire;

namespace KvStore.Server.Peer;

/// <summary>
/// The calling end of a framed peer stream (<see cref="PeerStreamWire"/>): one TCP connection (TLS for https:// URLs)
/// whose writes go straight to the socket from the sender's pump, with no HTTP/2 writer loop in between.
/// </summary>
internal sealed class PeerStreamConnection : IAsyncDisposable
{
    private static readonly byte[] PingFrame = new byte[PeerStreamWire.LengthBytes];

    private readonly Stream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);

    private PeerStreamConnection(Stream stream, ulong clusterId, ulong memberId, string? refusal, TimeSpan roundTrip)
    {
        _stream = stream;
        ClusterId = clusterId;
        MemberId = memberId;
        Refusal = refusal;
        HandshakeRoundTrip = roundTrip;
    }

    /// <summary>The cluster the listener said it belongs to.</summary>
    public ulong ClusterId { get; }

    /// <summary>The member the listener said it is.</summary>
    public ulong MemberId { get; }

    /// <summary>Why the listener refused this member; null when it accepted the stream.</summary>
    public string? Refusal { get; }

    /// <summary>From the hello written until the answer read.</summary>
    public TimeSpan HandshakeRoundTrip { get; }

    /// <summary>
    /// Connects to <paramref name="url"/> and exchanges hellos within <see cref="PeerTransportOptions.DialTimeout"/>.
    /// Null when the listener answered something other than the framed stream's preface (an HTTP/2 GOAWAY, an HTTP/1.1
    /// 400): a member of an earlier version, which serves only the gRPC stream.
    /// </summary>
    public static async Task<PeerStreamConnection?> OpenAsync(Uri url, PeerTransportOptions options, ulong peerId, CancellationToken cancellationToken)
    {
        using var dial = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        dial.CancelAfter(options.DialTimeout);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(new DnsEndPoint(url.DnsSafeHost, url.Port), dial.Token);
        }
        catch (Exception e)
        {
            socket.Dispose();
            throw e is OperationCanceledException && !cancellationToken.IsCancellationRequested ? DialTimedOut(url, options) : e;
        }

        Stream stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            if (url.Scheme == Uri.UriSchemeHttps)
            {
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = ssl;
                var sslOptions = options.Tls is { } tls ? PeerChannelFactory.CreateSslOptions(tls) : new SslClientAuthenticationOptions();
                sslOptions.TargetHost = url.IdnHost;
                await ssl.AuthenticateAsClientAsync(sslOptions, dial.Token);
            }

            var sent = Stopwatch.GetTimestamp();
            await stream.WriteAsync(PeerStreamWire.Hello(options.ClusterId, options.LocalMemberId, peerId), dial.Token);
            var header = new byte[PeerStreamWire.AnswerHeaderBytes];
            var prefaceLength = PeerStreamWire.Preface.Length;
            var read = await stream.ReadAtLeastAsync(header.AsMemory(0, prefaceLength), prefaceLength, throwOnEndOfStream: false, dial.Token);
            if (read == 0)
            {
                // Closed without a word (a listener going down): not a sign of an earlier version; retried as usual.
                throw new IOException($"{url} closed the connection without answering the stream's hello");
            }

            if (read < prefaceLength || !header.AsSpan(0, prefaceLength).SequenceEqual(PeerStreamWire.Preface))
            {
                await stream.DisposeAsync();
                return null;
            }

            await stream.ReadExactlyAsync(header.AsMemory(prefaceLength), dial.Token);
            var roundTrip = Stopwatch.GetElapsedTime(sent);
            var accepted = header[8] == 0;
            var clusterId = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(9));
            var memberId = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(17));
            var reason = new byte[BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(25))];
            await stream.ReadExactlyAsync(reason, dial.Token);
            var refusal = accepted ? null : Encoding.UTF8.GetString(reason);
            return new PeerStreamConnection(stream, clusterId, memberId, refusal, roundTrip);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            await stream.DisposeAsync();
            throw DialTimedOut(url, options);
        }
        catch
        {
            await stream.DisposeAsync();
            throw;
        }
    }

    private static TimeoutException DialTimedOut(Uri url, PeerTransportOptions options) =>
        new($"no stream to {url} within {options.DialTimeout.TotalSeconds:0.###} s");

    /// <summary>Writes one envelope as a frame; on the caller's thread when the socket takes it at once (it mostly does).</summary>
    public async ValueTask WriteAsync(RaftEnvelope envelope, CancellationToken cancellationToken)
    {
        var size = envelope.CalculateSize();
        var frame = ArrayPool<byte>.Shared.Rent(PeerStreamWire.LengthBytes + size);
        try
        {
            BinaryPrimitives.WriteUInt32BigEndian(frame, (uint)size);
            envelope.WriteTo(frame.AsSpan(PeerStreamWire.LengthBytes, size));
            await WriteFrameAsync(frame.AsMemory(0, PeerStreamWire.LengthBytes + size), cancellationToken);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(frame);
        }
    }

    /// <summary>Writes a ping; the listener answers it with one <see cref="PeerStreamWire.Pong"/>.</summary>
    public ValueTask PingAsync(CancellationToken cancellationToken) => WriteFrameAsync(PingFrame, cancellationToken);

    /// <summary>
    /// Reads the listener's answers to pings, calling <paramref name="onPong"/> for each, until the connection ends.
    /// Throws when it ends, and when nothing arrives for <paramref name="silence"/> (pings go out more often than that,
    /// so a silent listener is gone).
    /// </summary>
    public async Task ReadPongsAsync(TimeSpan silence, Action onPong, CancellationToken cancellationToken)
    {
        var received = new byte[64];
        while (true)
        {
            int read;
            using (var quiet = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                quiet.CancelAfter(silence);
                try
                {
                    read = await _stream.ReadAsync(received, quiet.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new IOException($"no answer to a ping within {silence.TotalSeconds:0.###} s");
                }
            }

            if (read == 0)
            {
                throw new IOException("the peer closed the stream");
            }

            for (var i = 0; i < read; i++)
            {
                if (received[i] != PeerStreamWire.Pong)
                {
                    throw new InvalidDataException($"the peer sent byte 0x{received[i]:x2} on the stream, where only pongs are expected");
                }

                onPong();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _writeLock.Dispose();
    }

    private async ValueTask WriteFrameAsync(ReadOnlyMemory<byte> frame, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            await _stream.WriteAsync(frame, cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }
}
