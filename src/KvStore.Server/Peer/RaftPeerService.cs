using Grpc.Core;
using KvStore.Raft.Wire;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Peer;

/// <summary>
/// The <c>kvstore.raft.RaftPeer</c> gRPC service: checks who is calling, then hands everything to the
/// <see cref="PeerTransport"/>'s node handler. Map it on the peer listener only (<see cref="PeerTransportExtensions.MapPeerTransport"/>).
/// </summary>
public sealed class RaftPeerService : RaftPeer.RaftPeerBase
{
    private static readonly ProbeResponse ProbeAnswer = new();

    private readonly PeerTransport _transport;
    private readonly ILogger<RaftPeerService> _logger;

    /// <summary>Creates the service over the member's transport.</summary>
    public RaftPeerService(PeerTransport transport, ILogger<RaftPeerService> logger)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(logger);
        _transport = transport;
        _logger = logger;
    }

    /// <inheritdoc/>
    public override async Task Stream(IAsyncStreamReader<RaftEnvelope> requestStream, IServerStreamWriter<PeerAck> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(requestStream);
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        var from = _transport.Authenticate(context);
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _transport.Stopping);
        try
        {
            await responseStream.WriteAsync(_transport.CreateAck(), ended.Token);
            while (await requestStream.MoveNext(ended.Token))
            {
                await _transport.DeliverAsync(from, requestStream.Current, ended.Token);
            }

            Log.IncomingStreamEnded(_logger, from, null);
        }
        catch (Exception e) when (e is IOException || (ended.IsCancellationRequested && e is OperationCanceledException or RpcException))
        {
            // The caller went away (a reset stream surfaces as an IOException before the call is cancelled) or this
            // member is stopping: the sender reconnects when it can.
            Log.IncomingStreamEnded(_logger, from, e);
        }
    }

    /// <summary>A peer's round-trip probe: nothing to do but answer (the caller need not be authenticated to learn nothing).</summary>
    public override Task<ProbeResponse> Probe(ProbeRequest request, ServerCallContext context) => Task.FromResult(ProbeAnswer);

    /// <inheritdoc/>
    public override async Task<SnapshotAck> SendSnapshot(IAsyncStreamReader<SnapshotChunk> requestStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(requestStream);
        ArgumentNullException.ThrowIfNull(context);
        var from = _transport.Authenticate(context);
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _transport.Stopping);
        return await _transport.ReceiveSnapshotAsync(from, requestStream, ended.Token);
    }
}
