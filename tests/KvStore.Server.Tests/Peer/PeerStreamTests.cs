using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using KvStore.Raft;
using KvStore.Raft.Wire;
using KvStore.Server.Peer;

namespace KvStore.Server.Tests.Peer;

/// <summary>
/// The framed peer stream: its bytes on the wire (written by hand here, so a change of format shows), the gRPC stream
/// as the fallback for a listener without it, and its pings finding a peer that went silent.
/// </summary>
public sealed class PeerStreamTests : IDisposable
{
    private static readonly byte[] Preface = "KVRAFT1\n"u8.ToArray();
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_hello_is_answered_then_frames_are_delivered_in_order_and_each_ping_gets_a_pong()
    {
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        using var tcp = await ConnectAsync(b);
        var stream = tcp.GetStream();

        await stream.WriteAsync(Hello(clusterId: 0xC1, from: 1, to: 2));
        var answer = new byte[27];
        await stream.ReadExactlyAsync(answer).AsTask().WaitAsync(Wait.Timeout);
        answer.Should().Equal([.. Preface, 0, .. Id(0xC1), .. Id(2), 0, 0], "accepted, naming the cluster and the member, no reason");

        // Two frames written in pieces (the listener must reassemble them), then two pings at once.
        var first = Frame(new RaftEnvelope { Messages = { MessageCodec.ToWire(Heartbeat(1)), MessageCodec.ToWire(Heartbeat(2)) } });
        var second = Frame(new RaftEnvelope { Messages = { MessageCodec.ToWire(Heartbeat(3)) } });
        byte[] all = [.. first, .. second, 0, 0, 0, 0, 0, 0, 0, 0];
        foreach (var piece in all.Chunk(5))
        {
            await stream.WriteAsync(piece);
        }

        for (ulong i = 1; i <= 3; i++)
        {
            var message = await Wait.For(b.Handler.Messages.Reader.ReadAsync());
            (message.Type, message.From, message.Index).Should().Be((MessageType.Heartbeat, 1UL, i));
        }

        var pongs = new byte[2];
        await stream.ReadExactlyAsync(pongs).AsTask().WaitAsync(Wait.Timeout);
        pongs.Should().Equal((byte)'P', (byte)'P');
    }

    [Fact]
    public async Task A_hello_from_another_cluster_gets_the_refusal_and_the_connection_ends()
    {
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        using var tcp = await ConnectAsync(b);
        var stream = tcp.GetStream();

        await stream.WriteAsync(Hello(clusterId: 0xAAAA, from: 1, to: 2));
        var header = new byte[27];
        await stream.ReadExactlyAsync(header).AsTask().WaitAsync(Wait.Timeout);
        header.AsSpan(0, 25).ToArray().Should().Equal([.. Preface, 1, .. Id(0xC1), .. Id(2)], "refused, naming this cluster and member");
        var reason = new byte[BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(25))];
        await stream.ReadExactlyAsync(reason).AsTask().WaitAsync(Wait.Timeout);
        var expected = "rejected connection from member 0000000000000001 of cluster 000000000000aaaa; this member belongs to cluster 00000000000000c1";
        Encoding.UTF8.GetString(reason).Should().Be(expected);
        (await stream.ReadAsync(new byte[1]).AsTask().WaitAsync(Wait.Timeout)).Should().Be(0, "the listener closes a refused stream");
        (await b.Logs.WaitForAsync("rejected connection")).Should().Contain(expected);
        b.Handler.Messages.Reader.TryPeek(out _).Should().BeFalse();
    }

    [Fact]
    public async Task A_peer_without_the_framed_stream_is_reached_through_the_grpc_stream()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"), framedStreams: false);
        a.Transport.AddPeer(2, [b.Url]);
        a.Transport.Send([.. Enumerable.Range(1, 50).Select(i => Heartbeat((ulong)i))]);

        for (ulong i = 1; i <= 50; i++)
        {
            (await Wait.For(b.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(i);
        }

        (await a.Logs.WaitForAsync("does not accept the framed stream")).Should().Contain("using the gRPC stream");
    }

    [Fact]
    public async Task A_peer_that_stops_answering_pings_is_reported_unreachable_and_reconnected()
    {
        // A listener that accepts the hello, then reads whatever comes and never answers.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"), configure: o => o with
        {
            ProbeInterval = TimeSpan.FromMilliseconds(200),
            KeepAlivePingTimeout = TimeSpan.FromMilliseconds(300),
        });
        a.Transport.AddPeer(2, [new Uri($"http://127.0.0.1:{port}")]);

        using var silent = await listener.AcceptTcpClientAsync().WaitAsync(Wait.Timeout);
        var stream = silent.GetStream();
        var hello = new byte[32];
        await stream.ReadExactlyAsync(hello).AsTask().WaitAsync(Wait.Timeout);
        hello.Should().Equal(Hello(clusterId: 0xC1, from: 1, to: 2));
        await stream.WriteAsync((byte[])[.. Preface, 0, .. Id(0xC1), .. Id(2), 0, 0]);
        await Wait.ForConnections(a.Transport, 2, 1);

        (await Wait.For(a.Handler.Unreachable.Reader.ReadAsync())).Should().Be(2UL);
        (await a.Logs.WaitForAsync("became inactive")).Should().Contain("no answer to a ping within 0.5 s");
        var pings = new byte[4];
        await stream.ReadExactlyAsync(pings).AsTask().WaitAsync(Wait.Timeout);
        pings.Should().Equal(0, 0, 0, 0);
        using var again = await listener.AcceptTcpClientAsync().WaitAsync(Wait.Timeout);
    }

    private static async Task<TcpClient> ConnectAsync(PeerHost host)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, host.Url.Port).WaitAsync(Wait.Timeout);
        return tcp;
    }

    private static Message Heartbeat(ulong sequence) =>
        new() { Type = MessageType.Heartbeat, From = 1, To = 2, Term = 1, Index = sequence };

    private static byte[] Id(ulong id)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, id);
        return bytes;
    }

    private static byte[] Hello(ulong clusterId, ulong from, ulong to) => [.. Preface, .. Id(clusterId), .. Id(from), .. Id(to)];

    private static byte[] Frame(RaftEnvelope envelope)
    {
        var body = envelope.ToByteArray();
        var length = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(length, (uint)body.Length);
        return [.. length, .. body];
    }
}
