using Grpc.Core;
using KvStore.Raft;
using KvStore.Raft.Wire;

namespace KvStore.Server.Peer;

public sealed partial class PeerTransport
{
    /// <summary>
    /// Checks the identity headers of an incoming call and returns the caller's member ID. A caller of another cluster, or
    /// one that meant to reach another member, is refused with FAILED_PRECONDITION and a log line naming both sides.
    /// </summary>
    internal ulong Authenticate(ServerCallContext context)
    {
        var headers = context.RequestHeaders;
        if (!PeerHeaders.TryGet(headers, PeerHeaders.ClusterId, out var clusterId)
            || !PeerHeaders.TryGet(headers, PeerHeaders.FromMemberId, out var from)
            || !PeerHeaders.TryGet(headers, PeerHeaders.ToMemberId, out var to))
        {
            var missing = $"rejected peer connection from {context.Peer}: missing member identity headers";
            Log.RejectedIncoming(_logger, missing);
            throw new RpcException(new Status(StatusCode.InvalidArgument, missing));
        }

        if (Refusal(clusterId, from, to) is { } reason)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, reason));
        }

        return from;
    }

    /// <summary>
    /// Why a caller naming itself member <paramref name="from"/> of cluster <paramref name="clusterId"/>, calling member
    /// <paramref name="to"/>, is refused (logged), or null when it is accepted.
    /// </summary>
    internal string? Refusal(ulong clusterId, ulong from, ulong to)
    {
        string? reason = null;
        if (clusterId != Options.ClusterId)
        {
            reason = $"rejected connection from member {PeerHeaders.Format(from)} of cluster {PeerHeaders.Format(clusterId)}; " +
                $"this member belongs to cluster {PeerHeaders.Format(Options.ClusterId)}";
        }
        else if (to != Options.LocalMemberId)
        {
            reason = $"rejected connection from member {PeerHeaders.Format(from)} meant for member {PeerHeaders.Format(to)}; " +
                $"this is member {PeerHeaders.Format(Options.LocalMemberId)} of cluster {PeerHeaders.Format(Options.ClusterId)}";
        }

        if (reason is not null)
        {
            Log.RejectedIncoming(_logger, reason);
        }

        return reason;
    }

    /// <summary>The acknowledgement that opens an accepted stream.</summary>
    internal PeerAck CreateAck() => new() { ClusterId = Options.ClusterId, MemberId = Options.LocalMemberId };

    /// <summary>Hands the messages of one envelope from <paramref name="from"/> to the node, dropping what cannot be
    /// genuine (another sender except for forwarded proposals and reads, another recipient, snapshots, local-only kinds).</summary>
    internal async ValueTask DeliverAsync(ulong from, RaftEnvelope envelope, CancellationToken cancellationToken)
    {
        Options.Metrics?.PeerReceivedBytes.WithLabels(Monitoring.ServerMetrics.PeerLabel(from)).Inc(envelope.CalculateSize());
        foreach (var wire in envelope.Messages)
        {
            var type = (MessageType)(int)wire.Type;
            string? problem = null;
            // A proposal or read request forwarded by a follower that still followed an older leader keeps its
            // originator as sender (the reply to a ReadIndex must reach the member that asked), so only these two
            // kinds may name another sender than the connection's member.
            if (wire.From != from && type is not (MessageType.Prop or MessageType.ReadIndex))
            {
                problem = $"it claims to come from {PeerHeaders.Format(wire.From)}";
            }
            else if (wire.To != Options.LocalMemberId)
            {
                problem = $"it is addressed to {PeerHeaders.Format(wire.To)}";
            }
            else if (type is MessageType.Snap or MessageType.Hup or MessageType.Beat or MessageType.Unreachable
                or MessageType.SnapStatus or MessageType.CheckQuorum || !Enum.IsDefined(type))
            {
                problem = "this kind does not travel on a message stream";
            }

            if (problem is not null)
            {
                Log.DroppedIncoming(_logger, type, from, problem);
                continue;
            }

            if (type == MessageType.HeartbeatResp)
            {
                Sender(from)?.HeartbeatAnswered();
            }

            await _handler.DeliverAsync(MessageCodec.FromWire(wire), cancellationToken);
        }
    }

    /// <summary>Receives one snapshot transfer into a file in <see cref="PeerTransportOptions.SnapshotDirectory"/> and hands
    /// it to the node; the file is deleted if anything fails before the node accepted it.</summary>
    internal async Task<SnapshotAck> ReceiveSnapshotAsync(ulong from, IAsyncStreamReader<SnapshotChunk> chunks, CancellationToken cancellationToken)
    {
        if (!await chunks.MoveNext(cancellationToken))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "empty snapshot transfer"));
        }

        var first = chunks.Current;
        if (first.Message is not { Type: RaftMessageType.Snap, Snapshot: not null } wire || wire.From != from || wire.To != Options.LocalMemberId)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "a snapshot transfer must start with a snapshot message from the caller to this member"));
        }

        var message = MessageCodec.FromWire(wire);
        var metadata = message.Snapshot!.Metadata;
        Directory.CreateDirectory(Options.SnapshotDirectory);
        var path = Path.Combine(
            Options.SnapshotDirectory,
            $"{metadata.Term:x16}-{metadata.Index:x16}-from-{from:x16}-{Guid.NewGuid():N}.snap");
        Log.SnapshotReceiving(_logger, from, metadata.Index, metadata.Term, path);
        var handedOver = false;
        try
        {
            long size = 0;
            await using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
            {
                var chunk = first;
                while (true)
                {
                    if (!chunk.Data.IsEmpty)
                    {
                        await file.WriteAsync(chunk.Data.Memory, cancellationToken);
                        size += chunk.Data.Length;
                    }

                    if (!await chunks.MoveNext(cancellationToken))
                    {
                        break;
                    }

                    chunk = chunks.Current;
                }

                if (first.TotalSize != 0 && (ulong)size != first.TotalSize)
                {
                    throw new RpcException(new Status(StatusCode.DataLoss, $"snapshot truncated: {size} of {first.TotalSize} bytes"));
                }

                await file.FlushAsync(cancellationToken);
                file.Flush(flushToDisk: true);
            }

            await _handler.DeliverSnapshotAsync(new ReceivedSnapshot(message, path, size), cancellationToken);
            handedOver = true;
            Log.SnapshotReceived(_logger, from, metadata.Index, metadata.Term, size);
            return new SnapshotAck { ReceivedBytes = (ulong)size };
        }
        catch (Exception e)
        {
            Log.SnapshotReceiveFailed(_logger, from, e);
            throw;
        }
        finally
        {
            if (!handedOver)
            {
                TryDelete(path);
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
