using System.Buffers;
using System.IO.Pipelines;
using KvStore.Raft.Wire;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace KvStore.Server.Peer;

public sealed partial class PeerTransport
{
    /// <summary>
    /// Connection middleware of a peer listener (after its TLS, if any): a connection that opens with the framed
    /// stream's preface (<see cref="PeerStreamWire"/>) is served here, any other goes on to <paramref name="next"/>
    /// (HTTP/2: the gRPC services, snapshots among them). Messages are read straight from the connection's pipe and
    /// handed to the node in order, as <see cref="RaftPeerService"/> does with the gRPC stream's.
    /// </summary>
    internal async Task AcceptAsync(ConnectionContext context, ConnectionDelegate next)
    {
        var closing = context.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? CancellationToken.None;
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(closing, context.ConnectionClosed, Stopping);
        var input = context.Transport.Input;
        ulong from = 0;
        try
        {
            var hello = await ReadHelloAsync(input, ended.Token);
            if (hello is null)
            {
                await next(context);
                return;
            }

            var (clusterId, caller, to) = hello.Value;
            from = caller;
            var refusal = Refusal(clusterId, caller, to);
            await context.Transport.Output.WriteAsync(PeerStreamWire.Answer(Options.ClusterId, Options.LocalMemberId, refusal), ended.Token);
            if (refusal is null)
            {
                await ReadFramesAsync(context.Transport, caller, ended.Token);
            }
        }
        catch (Exception e) when (e is IOException or ConnectionResetException or InvalidDataException
            || (ended.IsCancellationRequested && e is OperationCanceledException))
        {
            // The caller went away, sent something that is not a frame, or this member is stopping: the caller
            // reconnects when it can.
            Log.IncomingStreamEnded(_logger, from, e);
        }
    }

    /// <summary>
    /// The caller's IDs once the whole hello has arrived; null (nothing consumed) for a connection that is not a framed
    /// stream. The first byte decides, so HTTP/2 never waits for more than it sent.
    /// </summary>
    private static async Task<(ulong ClusterId, ulong From, ulong To)?> ReadHelloAsync(PipeReader input, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            if (buffer.IsEmpty || buffer.FirstSpan[0] != PeerStreamWire.Preface[0])
            {
                input.AdvanceTo(buffer.Start);
                return null;
            }

            if (buffer.Length >= PeerStreamWire.HelloBytes)
            {
                if (!PeerStreamWire.StartsWithPreface(buffer))
                {
                    throw new InvalidDataException("a peer connection opened with neither HTTP/2 nor the framed stream's preface");
                }

                var hello = PeerStreamWire.ReadHello(buffer);
                input.AdvanceTo(buffer.GetPosition(PeerStreamWire.HelloBytes));
                return hello;
            }

            if (result.IsCompleted)
            {
                throw new IOException("the caller closed the connection within its hello");
            }

            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private async Task ReadFramesAsync(IDuplexPipe transport, ulong from, CancellationToken cancellationToken)
    {
        var input = transport.Input;
        var limit = Options.MaxReceiveBytes;
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var pings = 0;
            try
            {
                while (buffer.Length >= PeerStreamWire.LengthBytes)
                {
                    var length = PeerStreamWire.ReadLength(buffer);
                    if (length > (uint)limit)
                    {
                        throw new InvalidDataException($"a frame of {length} bytes from peer {PeerHeaders.Format(from)} exceeds the limit of {limit} bytes");
                    }

                    if (buffer.Length < PeerStreamWire.LengthBytes + length)
                    {
                        break;
                    }

                    var frame = buffer.Slice(PeerStreamWire.LengthBytes, length);
                    buffer = buffer.Slice(frame.End);
                    if (length == 0)
                    {
                        pings++;
                        continue;
                    }

                    await DeliverAsync(from, RaftEnvelope.Parser.ParseFrom(frame), cancellationToken);
                }
            }
            finally
            {
                input.AdvanceTo(buffer.Start, buffer.End);
            }

            if (pings > 0)
            {
                var pongs = transport.Output.GetSpan(pings);
                pongs[..pings].Fill(PeerStreamWire.Pong);
                transport.Output.Advance(pings);
                await transport.Output.FlushAsync(cancellationToken);
            }

            if (result.IsCompleted)
            {
                Log.IncomingStreamEnded(_logger, from, null);
                return;
            }
        }
    }
}
