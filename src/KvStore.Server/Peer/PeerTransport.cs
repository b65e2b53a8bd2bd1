using System.Collections.Concurrent;
using KvStore.Raft;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Peer;

/// <summary>
/// Carries Raft messages between this member and its peers (docs/peer-transport.md): on a framed stream of their own,
/// or over gRPC toward a peer without it (protos/kvstore/raft.proto).
/// Outgoing: <see cref="Send"/> never blocks — each peer has a bounded queue drained by one stream that reconnects with
/// exponential backoff; snapshots travel on a gRPC call and connection of their own. Incoming: <see cref="AcceptAsync"/>
/// (framed streams) and <see cref="RaftPeerService"/> (gRPC) check the caller's cluster and member IDs and hand
/// messages and snapshots to the <see cref="IPeerTransportHandler"/>.
/// Membership: <see cref="AddPeer"/>, <see cref="UpdatePeer"/>, <see cref="RemovePeer"/>. All members are thread-safe.
/// </summary>
public sealed partial class PeerTransport : IAsyncDisposable
{
    private readonly IPeerTransportHandler _handler;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ulong, PeerSender> _peers = new();
    private readonly CancellationTokenSource _stopping = new();
    private TaskCompletionSource _peerActivated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;

    /// <summary>Creates a transport with no peers.</summary>
    /// <param name="options">Identity, limits, timings, TLS.</param>
    /// <param name="handler">Receives incoming messages and snapshots, and send outcomes.</param>
    /// <param name="loggerFactory">Logging (category KvStore.Server.Peer.PeerTransport).</param>
    public PeerTransport(PeerTransportOptions options, IPeerTransportHandler handler, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        Options = options;
        _handler = handler;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger<PeerTransport>();
    }

    /// <summary>The settings given at construction.</summary>
    public PeerTransportOptions Options { get; }

    /// <summary>IDs of the peers messages can be sent to.</summary>
    public IReadOnlyCollection<ulong> Peers => [.. _peers.Keys];

    /// <summary>How many peers have a stream acknowledged right now (etcd's ActivePeers).</summary>
    public int ActivePeers => _peers.Values.Count(p => p.ActiveSince is not null);

    /// <summary>
    /// Completes when the next stream to any peer is acknowledged. Take it before reading <see cref="ActivePeers"/>,
    /// so an activation in between is not missed.
    /// </summary>
    public Task NextPeerActive => Volatile.Read(ref _peerActivated).Task;

    /// <summary>Cancelled when the transport stops; ends incoming streams so the host can shut down.</summary>
    internal CancellationToken Stopping => _stopping.Token;

    /// <summary>
    /// Queues messages for their recipients (<see cref="Message.To"/>) and returns at once. Messages to one peer are sent
    /// in order; a <see cref="MessageType.Snap"/> message is sent on its own call with <see cref="Snapshot.Data"/> as the
    /// data (use <see cref="SendSnapshot"/> to stream it from elsewhere). A full queue drops the message and reports the
    /// peer unreachable; a message to an unknown peer is dropped (a snapshot also reported failed).
    /// </summary>
    public void Send(IReadOnlyList<Message> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        foreach (var message in messages)
        {
            if (message.Type == MessageType.Snap)
            {
                SendSnapshot(message, SnapshotSource.FromMemory(message.Snapshot?.Data ?? ReadOnlyMemory<byte>.Empty));
                continue;
            }

            if (_peers.TryGetValue(message.To, out var sender))
            {
                sender.Enqueue(message);
            }
            else
            {
                Log.UnknownPeer(_logger, message.Type, message.To);
            }
        }
    }

    /// <summary>
    /// Sends a <see cref="MessageType.Snap"/> message whose data comes from <paramref name="data"/> (owned and disposed by
    /// the transport). One transfer per peer at a time; the outcome arrives through
    /// <see cref="IPeerTransportHandler.ReportSnapshot"/>.
    /// </summary>
    public void SendSnapshot(Message message, SnapshotSource data)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(data);
        if (message.Type != MessageType.Snap || message.Snapshot is null)
        {
            throw new ArgumentException("not a snapshot message", nameof(message));
        }

        if (_peers.TryGetValue(message.To, out var sender))
        {
            sender.SendSnapshot(message, data);
            return;
        }

        Log.UnknownPeer(_logger, message.Type, message.To);
        _ = data.DisposeAsync().AsTask();
        _handler.ReportSnapshot(message.To, false);
    }

    /// <summary>Starts talking to a peer (or, if it is known, replaces its URLs as <see cref="UpdatePeer"/>).</summary>
    /// <param name="peerId">The peer's member ID.</param>
    /// <param name="urls">Its peer URLs (http:// or https://); tried in turn when one fails.</param>
    public void AddPeer(ulong peerId, IReadOnlyList<Uri> urls)
    {
        ValidateUrls(peerId, urls);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var added = false;
        var sender = _peers.GetOrAdd(peerId, id =>
        {
            added = true;
            return new PeerSender(id, urls, Options, _handler, _logger, OnPeerActive);
        });
        if (added)
        {
            Log.PeerAdded(_logger, peerId, string.Join(",", urls));
        }
        else
        {
            sender.UpdateUrls(urls);
            Log.PeerUpdated(_logger, peerId, string.Join(",", urls));
        }
    }

    /// <summary>Replaces a peer's URLs; its stream reconnects to the new ones. False if the peer is unknown.</summary>
    public bool UpdatePeer(ulong peerId, IReadOnlyList<Uri> urls)
    {
        ValidateUrls(peerId, urls);
        if (!_peers.TryGetValue(peerId, out var sender))
        {
            return false;
        }

        sender.UpdateUrls(urls);
        Log.PeerUpdated(_logger, peerId, string.Join(",", urls));
        return true;
    }

    /// <summary>Stops talking to a peer: its queue is discarded and its connections closed. False if it was unknown.</summary>
    public async Task<bool> RemovePeerAsync(ulong peerId)
    {
        if (!_peers.TryRemove(peerId, out var sender))
        {
            return false;
        }

        Log.PeerRemoved(_logger, peerId);
        await sender.DisposeAsync();
        return true;
    }

    /// <summary>Like <see cref="RemovePeerAsync"/>, without waiting for the connections to close.</summary>
    public bool RemovePeer(ulong peerId)
    {
        if (!_peers.TryRemove(peerId, out var sender))
        {
            return false;
        }

        Log.PeerRemoved(_logger, peerId);
        _ = sender.DisposeAsync().AsTask();
        return true;
    }

    /// <summary>Since when the stream to a peer has been up (etcd's "active since"); null if it is down or unknown.</summary>
    public DateTimeOffset? ActiveSince(ulong peerId) => _peers.TryGetValue(peerId, out var sender) ? sender.ActiveSince : null;

    /// <summary>Stops every sender and ends incoming streams.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync();
        var senders = _peers.Values.ToList();
        _peers.Clear();
        // All at once: a sender still finishing a snapshot stream must not keep the other peers' links up meanwhile.
        await Task.WhenAll(senders.Select(sender => sender.DisposeAsync().AsTask()));
    }

    /// <summary>Ends incoming streams now (the host is stopping); senders stop in <see cref="DisposeAsync"/>.</summary>
    internal void BeginStop() => _stopping.Cancel();

    private void OnPeerActive() =>
        Interlocked.Exchange(ref _peerActivated, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    internal PeerSender? Sender(ulong peerId) => _peers.TryGetValue(peerId, out var sender) ? sender : null;

    private void ValidateUrls(ulong peerId, IReadOnlyList<Uri> urls)
    {
        ArgumentNullException.ThrowIfNull(urls);
        if (peerId == 0 || peerId == Options.LocalMemberId)
        {
            throw new ArgumentException($"invalid peer ID {PeerHeaders.Format(peerId)}", nameof(peerId));
        }

        if (urls.Count == 0 || urls.Any(u => !u.IsAbsoluteUri || (u.Scheme != Uri.UriSchemeHttp && u.Scheme != Uri.UriSchemeHttps)))
        {
            throw new ArgumentException($"peer {PeerHeaders.Format(peerId)} needs at least one http:// or https:// URL", nameof(urls));
        }
    }
}
