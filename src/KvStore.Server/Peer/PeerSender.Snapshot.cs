using Google.Protobuf;
using Grpc.Core;
using KvStore.Raft;
using KvStore.Raft.Wire;

namespace KvStore.Server.Peer;

internal sealed partial class PeerSender
{
    /// <summary>
    /// Starts sending a snapshot unless one is already in flight to this peer (then the new one is dropped: Raft asks for
    /// a snapshot again after the outcome of the first). The outcome is reported through
    /// <see cref="IPeerTransportHandler.ReportSnapshot"/>; the source is disposed when done.
    /// </summary>
    public void SendSnapshot(Message message, SnapshotSource source)
    {
        if (Interlocked.CompareExchange(ref _snapshotBusy, 1, 0) != 0)
        {
            Log.SnapshotBusy(_logger, _peerId, message.Snapshot?.Metadata.Index ?? 0);
            _ = source.DisposeAsync().AsTask();
            return;
        }

        Volatile.Write(ref _snapshotTask, Task.Run(() => TransferAsync(message, source)));
    }

    private async Task TransferAsync(Message message, SnapshotSource source)
    {
        var metadata = message.Snapshot?.Metadata ?? new SnapshotMetadata();
        var success = false;
        try
        {
            await using (source)
            {
                Log.SnapshotSending(_logger, _peerId, metadata.Index, metadata.Term);
                var sent = await StreamSnapshotAsync(message, source, _stop.Token);
                success = true;
                Log.SnapshotSent(_logger, _peerId, metadata.Index, metadata.Term, sent);
            }
        }
        catch (Exception e)
        {
            Log.SnapshotSendFailed(_logger, _peerId, metadata.Index, metadata.Term, e);
        }
        finally
        {
            Volatile.Write(ref _snapshotBusy, 0);
            _handler.ReportSnapshot(_peerId, success);
        }
    }

    private async Task<long> StreamSnapshotAsync(Message message, SnapshotSource source, CancellationToken cancellationToken)
    {
        var endpoint = CurrentEndpoint();
        var client = new RaftPeer.RaftPeerClient(endpoint.Snapshots(_options));
        var headers = PeerHeaders.Create(_options.ClusterId, _options.LocalMemberId, _peerId);
        using var call = client.SendSnapshot(new CallOptions(headers: headers, cancellationToken: cancellationToken));

        var wire = MessageCodec.ToWire(message);
        wire.Entries.Clear();
        var first = new SnapshotChunk
        {
            Message = wire,
            TotalSize = (ulong)(source.Length ?? 0),
        };
        var pending = first;
        long sent = 0;
        await foreach (var piece in source.ReadAsync(_options.SnapshotChunkBytes, cancellationToken))
        {
            var chunk = pending ?? new SnapshotChunk();
            pending = null;
            chunk.Data = UnsafeByteOperations.UnsafeWrap(piece);
            await call.RequestStream.WriteAsync(chunk, cancellationToken);
            sent += piece.Length;
        }

        if (pending is not null)
        {
            await call.RequestStream.WriteAsync(pending, cancellationToken);
        }

        await call.RequestStream.CompleteAsync();
        var ack = await call.ResponseAsync;
        if ((long)ack.ReceivedBytes != sent)
        {
            throw new IOException($"the peer stored {ack.ReceivedBytes} snapshot bytes of {sent}");
        }

        return sent;
    }
}
