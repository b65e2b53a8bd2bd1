using System.Threading.Channels;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.Raft;
using KvStore.Raft.Wire;
using KvStore.Server.Monitoring;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Peer;

/// <summary>
/// Everything this member sends to one peer: a bounded queue of messages drained by one loop into one long-lived
/// stream (framed, or a <c>RaftPeer.Stream</c> call toward a peer without it; reconnecting with exponential backoff),
/// and at most one snapshot transfer at a time on a connection of its own.
/// </summary>
internal sealed partial class PeerSender : IAsyncDisposable
{
    private readonly ulong _peerId;
    private readonly PeerTransportOptions _options;
    private readonly IPeerTransportHandler _handler;
    private readonly ILogger _logger;
    private readonly Action? _onActive;
    private readonly Channel<Message> _queue;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly Task _loop;
    private PeerEndpoint[] _endpoints;
    private CancellationTokenSource? _connection;
    private int _current;
    private int _queueFull;
    private int _snapshotBusy;
    private Task _snapshotTask = Task.CompletedTask;
    private long _activeSinceTicks;
    private int _connections;
    private long _dropped;
    private TaskCompletionSource _connected = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static readonly ProbeRequest ProbeQuestion = new();

    // This peer's series, labelled once: the send path and each round-trip sample then allocate nothing.
    private readonly Prometheus.Histogram.Child? _roundTrip;
    private readonly Prometheus.Counter.Child? _sentBytes;

    // When the latest heartbeat to the peer went out (a Stopwatch timestamp), 0 once its response was timed.
    private long _heartbeatSentAt;

    public PeerSender(ulong peerId, IReadOnlyList<Uri> urls, PeerTransportOptions options, IPeerTransportHandler handler, ILogger logger, Action? onActive = null)
    {
        _peerId = peerId;
        _onActive = onActive;
        _options = options;
        _handler = handler;
        _logger = logger;
        _endpoints = CreateEndpoints(urls);
        _roundTrip = options.Metrics?.PeerRoundTrip.WithLabels(ServerMetrics.PeerLabel(peerId));
        _sentBytes = options.Metrics?.PeerSentBytes.WithLabels(ServerMetrics.PeerLabel(peerId));
        _queue = Channel.CreateBounded<Message>(new BoundedChannelOptions(options.QueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _loop = Task.Run(RunAsync);
    }

    /// <summary>When the current stream was acknowledged by the peer; null while there is none.</summary>
    public DateTimeOffset? ActiveSince
    {
        get
        {
            var ticks = Interlocked.Read(ref _activeSinceTicks);
            return ticks == 0 ? null : new DateTimeOffset(ticks, TimeSpan.Zero);
        }
    }

    /// <summary>How many streams the peer has acknowledged so far (test and diagnostics hook).</summary>
    internal int Connections => Volatile.Read(ref _connections);

    /// <summary>Messages dropped because the queue was full.</summary>
    internal long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Completes at the next acknowledged stream; read it before <see cref="Connections"/> to avoid missing one.</summary>
    internal Task NextConnection => Volatile.Read(ref _connected).Task;

    /// <summary>Queues a message; never blocks. False (and the peer reported unreachable) when the queue is full.</summary>
    public bool Enqueue(Message message)
    {
        if (_queue.Writer.TryWrite(message))
        {
            Volatile.Write(ref _queueFull, 0);
            return true;
        }

        Interlocked.Increment(ref _dropped);
        _options.Metrics?.PeerSentFailures.WithLabels(ServerMetrics.PeerLabel(_peerId)).Inc();
        if (Interlocked.Exchange(ref _queueFull, 1) == 0)
        {
            Log.QueueFull(_logger, _peerId, _options.QueueCapacity);
        }

        _handler.ReportUnreachable(_peerId);
        return false;
    }

    /// <summary>
    /// The peer answered a heartbeat: one round-trip sample (etcd's prober measures every few seconds; the leader's
    /// heartbeats give a sample per heartbeat interval). Timed against the latest heartbeat sent, so a lost response
    /// never stretches a later sample; a response slower than the heartbeat interval is timed from the next one.
    /// </summary>
    internal void HeartbeatAnswered()
    {
        var sent = Interlocked.Exchange(ref _heartbeatSentAt, 0);
        if (sent != 0)
        {
            _roundTrip?.Observe(System.Diagnostics.Stopwatch.GetElapsedTime(sent).TotalSeconds);
        }
    }

    /// <summary>Replaces the peer's URLs and restarts its stream on them.</summary>
    public void UpdateUrls(IReadOnlyList<Uri> urls)
    {
        PeerEndpoint[] old;
        lock (_lock)
        {
            old = _endpoints;
            _endpoints = CreateEndpoints(urls);
            _current = 0;
            _connection?.Cancel();
        }

        foreach (var endpoint in old)
        {
            endpoint.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _queue.Writer.TryComplete();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }

        try
        {
            await Volatile.Read(ref _snapshotTask);
        }
        catch (OperationCanceledException)
        {
        }

        lock (_lock)
        {
            foreach (var endpoint in _endpoints)
            {
                endpoint.Dispose();
            }
        }

        _stop.Dispose();
    }

    private static PeerEndpoint[] CreateEndpoints(IReadOnlyList<Uri> urls) => [.. urls.Select(url => new PeerEndpoint(url))];

    private PeerEndpoint CurrentEndpoint()
    {
        lock (_lock)
        {
            return _endpoints[_current % _endpoints.Length];
        }
    }

    private async Task RunAsync()
    {
        var backoff = _options.MinBackoff;
        string? lastRefusal = null;
        while (!_stop.IsCancellationRequested)
        {
            PeerEndpoint endpoint;
            CancellationTokenSource connection;
            lock (_lock)
            {
                endpoint = _endpoints[_current % _endpoints.Length];
                connection = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                _connection = connection;
            }

            var acknowledged = false;
            try
            {
                await StreamAsync(endpoint, () =>
                {
                    acknowledged = true;
                    backoff = _options.MinBackoff;
                    lastRefusal = null;
                }, connection.Token);
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                if (acknowledged)
                {
                    Interlocked.Exchange(ref _activeSinceTicks, 0);
                    if (ExpectedStreamEnd(e) is { } reason)
                    {
                        Log.PeerInactive(_logger, _peerId, endpoint.Url, reason);
                    }
                    else
                    {
                        Log.PeerStreamFailed(_logger, _peerId, endpoint.Url, e);
                    }
                }
                else if (e is PeerRefusedException or RpcException { StatusCode: StatusCode.FailedPrecondition })
                {
                    var reason = e is RpcException rpc ? rpc.Status.Detail : e.Message;
                    if (reason != lastRefusal)
                    {
                        Log.RefusedByPeer(_logger, _peerId, endpoint.Url, reason);
                        lastRefusal = reason;
                    }

                    backoff = _options.MaxBackoff;
                }
                else
                {
                    Log.ConnectFailed(_logger, _peerId, endpoint.Url, backoff, e);
                }

                _options.Metrics?.PeerSentFailures.WithLabels(ServerMetrics.PeerLabel(_peerId)).Inc();

                _handler.ReportUnreachable(_peerId);
                lock (_lock)
                {
                    // Try the peer's next URL unless the URLs were just replaced (then start from the first).
                    if (ReferenceEquals(_connection, connection) && !acknowledged)
                    {
                        _current++;
                    }
                }
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                // Stopping: however the call ended (cancelled, reset), there is nothing to report.
                break;
            }
            finally
            {
                lock (_lock)
                {
                    if (ReferenceEquals(_connection, connection))
                    {
                        _connection = null;
                    }
                }

                connection.Dispose();
            }

            try
            {
                await Task.Delay(backoff, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, _options.MaxBackoff.Ticks));
        }

        Interlocked.Exchange(ref _activeSinceTicks, 0);
    }

    /// <summary>
    /// One line for the ways a healthy stream ends (the peer restarted or closed the connection, the connection was
    /// replaced, the network dropped), or null for anything else, which is logged with its stack trace.
    /// </summary>
    private static string? ExpectedStreamEnd(Exception e) => e switch
    {
        RpcException rpc => $"{rpc.StatusCode}: {rpc.Status.Detail}",
        OperationCanceledException => "canceled",
        IOException or HttpRequestException => e.Message,
        _ => null,
    };

    /// <summary>
    /// One stream to the peer until it breaks: the framed stream, or the gRPC stream when the peer's listener does not
    /// know the framed one (a member of an earlier version, during a rolling upgrade). Each attempt asks again, so a
    /// peer upgraded meanwhile gets the framed stream from its next connection on.
    /// </summary>
    private async Task StreamAsync(PeerEndpoint endpoint, Action onAcknowledged, CancellationToken cancellationToken)
    {
        await using var framed = await PeerStreamConnection.OpenAsync(endpoint.Url, _options, _peerId, cancellationToken);
        if (framed is null)
        {
            Log.FramedStreamUnsupported(_logger, _peerId, endpoint.Url);
            await GrpcStreamAsync(endpoint, onAcknowledged, cancellationToken);
            return;
        }

        if (framed.Refusal is { } refusal)
        {
            throw new PeerRefusedException(refusal);
        }

        _roundTrip?.Observe(framed.HandshakeRoundTrip.TotalSeconds);
        Acknowledged(endpoint, framed.ClusterId, framed.MemberId, onAcknowledged);

        // The peer sends nothing but pongs: the connection ending, or going silent past the ping interval and the
        // keep-alive timeout, is how a dead stream shows up even while there is nothing to write.
        using var broken = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        long pingSentAt = 0;
        var watch = WatchAsync(
            framed.ReadPongsAsync(
                _options.ProbeInterval + _options.KeepAlivePingTimeout,
                () =>
                {
                    var sent = Interlocked.Exchange(ref pingSentAt, 0);
                    if (sent != 0)
                    {
                        _roundTrip?.Observe(System.Diagnostics.Stopwatch.GetElapsedTime(sent).TotalSeconds);
                    }
                },
                broken.Token),
            broken);
        var pings = PingAsync(framed, () => Interlocked.Exchange(ref pingSentAt, System.Diagnostics.Stopwatch.GetTimestamp()), broken.Token);
        await PumpUntilBrokenAsync(framed.WriteAsync, watch, pings, broken, cancellationToken);
    }

    /// <summary>The stream over gRPC (<c>RaftPeer.Stream</c>), with its acknowledgement and etcd's prober.</summary>
    private async Task GrpcStreamAsync(PeerEndpoint endpoint, Action onAcknowledged, CancellationToken cancellationToken)
    {
        var client = new RaftPeer.RaftPeerClient(endpoint.Messages(_options));
        var headers = PeerHeaders.Create(_options.ClusterId, _options.LocalMemberId, _peerId);
        using var call = client.Stream(new CallOptions(headers: headers, cancellationToken: cancellationToken));

        // Opening a stream is one request and its acknowledgement: the round trip etcd's prober measures.
        var opened = System.Diagnostics.Stopwatch.GetTimestamp();
        using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            handshake.CancelAfter(_options.DialTimeout);
            if (!await call.ResponseStream.MoveNext(handshake.Token))
            {
                throw new IOException("the peer closed the stream without acknowledging it");
            }
        }

        _roundTrip?.Observe(System.Diagnostics.Stopwatch.GetElapsedTime(opened).TotalSeconds);
        var ack = call.ResponseStream.Current;
        Acknowledged(endpoint, ack.ClusterId, ack.MemberId, onAcknowledged);

        // The peer sends nothing more: the response stream ending (or failing) is how a dead stream shows up
        // even while there is nothing to write.
        using var broken = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var watch = WatchAsync(DrainAsync(call.ResponseStream, broken.Token), broken);
        var probes = ProbeAsync(client, broken.Token);
        await PumpUntilBrokenAsync((envelope, token) => new ValueTask(call.RequestStream.WriteAsync(envelope, token)), watch, probes, broken, cancellationToken);
    }

    /// <summary>
    /// Pumps the queue into a stream until it breaks (a write fails, or its reader ends and cancels
    /// <paramref name="broken"/>), waits for its keep-alive to stop, and throws why it ended.
    /// </summary>
    private async Task PumpUntilBrokenAsync(
        Func<RaftEnvelope, CancellationToken, ValueTask> write,
        Task<Exception?> watch,
        Task keepAlive,
        CancellationTokenSource broken,
        CancellationToken cancellationToken)
    {
        try
        {
            await PumpAsync(write, broken.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && broken.IsCancellationRequested)
        {
            // Fall through: the watcher says why.
        }
        finally
        {
            await broken.CancelAsync();
            await keepAlive;
        }

        throw await watch ?? new IOException("the peer ended the stream");
    }

    /// <summary>Checks who answered, then marks the stream active (counted, logged, waiters woken).</summary>
    private void Acknowledged(PeerEndpoint endpoint, ulong clusterId, ulong memberId, Action onAcknowledged)
    {
        if (clusterId != _options.ClusterId || memberId != _peerId)
        {
            throw new PeerRefusedException(
                $"the member at {endpoint.Url} is member {PeerHeaders.Format(memberId)} of cluster {PeerHeaders.Format(clusterId)}; " +
                $"expected member {PeerHeaders.Format(_peerId)} of cluster {PeerHeaders.Format(_options.ClusterId)}");
        }

        onAcknowledged();
        Interlocked.Exchange(ref _activeSinceTicks, DateTimeOffset.UtcNow.UtcTicks);
        Interlocked.Increment(ref _connections);
        Interlocked.Exchange(ref _connected, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        _onActive?.Invoke();
        Log.PeerActive(_logger, _peerId, endpoint.Url);
    }

    /// <summary>A ping every <see cref="PeerTransportOptions.ProbeInterval"/>: the keep-alive of a framed stream, and
    /// (its pong timed) the round-trip sample etcd's prober takes.</summary>
    private async Task PingAsync(PeerStreamConnection framed, Action onSent, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.ProbeInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken))
            {
                onSent();
                await framed.PingAsync(cancellationToken);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            // The stream is ending; the watcher or the pump says why.
        }
    }

    /// <summary>
    /// etcd's prober: while the stream is up, a <c>Probe</c> call on the same connection every
    /// <see cref="PeerTransportOptions.ProbeInterval"/>, timed into the round-trip histogram. Only the leader sends
    /// heartbeats (whose answers are timed too), so this is what gives every member samples toward every peer.
    /// A probe that fails is no sample; the stream itself notices a dead connection.
    /// </summary>
    private async Task ProbeAsync(RaftPeer.RaftPeerClient client, CancellationToken cancellationToken)
    {
        if (_roundTrip is null)
        {
            return;
        }

        using var timer = new PeriodicTimer(_options.ProbeInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken))
            {
                var started = System.Diagnostics.Stopwatch.GetTimestamp();
                try
                {
                    await client.ProbeAsync(ProbeQuestion, deadline: DateTime.UtcNow + _options.DialTimeout, cancellationToken: cancellationToken);
                    _roundTrip.Observe(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
                }
                catch (RpcException)
                {
                    // No sample (and when the stream ends, the next tick ends the loop).
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static async Task DrainAsync(IAsyncStreamReader<PeerAck> responses, CancellationToken cancellationToken)
    {
        while (await responses.MoveNext(cancellationToken))
        {
        }
    }

    /// <summary>Runs the stream's reader; its end (null when it simply ended) breaks the stream.</summary>
    private static async Task<Exception?> WatchAsync(Task reading, CancellationTokenSource broken)
    {
        try
        {
            await reading;
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
        finally
        {
            await broken.CancelAsync();
        }
    }

    private async Task PumpAsync(Func<RaftEnvelope, CancellationToken, ValueTask> write, CancellationToken cancellationToken)
    {
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync(cancellationToken))
        {
            var envelope = new RaftEnvelope();
            var size = 0;
            var heartbeat = false;
            while (reader.TryPeek(out var message))
            {
                var wire = MessageCodec.ToWire(message);
                var bytes = wire.CalculateSize() + 6;
                if (bytes > _options.MaxMessageBytes)
                {
                    reader.TryRead(out _);
                    Log.MessageTooLarge(_logger, message.Type, _peerId, bytes, _options.MaxMessageBytes);
                    continue;
                }

                if (envelope.Messages.Count > 0 && size + bytes > _options.MaxMessageBytes)
                {
                    break;
                }

                reader.TryRead(out _);
                envelope.Messages.Add(wire);
                size += bytes;
                heartbeat |= message.Type == MessageType.Heartbeat;
            }

            if (envelope.Messages.Count > 0)
            {
                if (heartbeat)
                {
                    // Before the write: the response may arrive before WriteAsync returns.
                    Interlocked.Exchange(ref _heartbeatSentAt, System.Diagnostics.Stopwatch.GetTimestamp());
                }

                await write(envelope, cancellationToken);
                _sentBytes?.Inc(size);
            }
        }
    }

    /// <summary>One URL of the peer with its two channels (messages and snapshots use separate HTTP/2 connections so a
    /// snapshot never holds back heartbeats on the connection's flow-control window).</summary>
    private sealed class PeerEndpoint(Uri url) : IDisposable
    {
        private readonly Lock _lock = new();
        private GrpcChannel? _messages;
        private GrpcChannel? _snapshots;
        private bool _disposed;

        public Uri Url { get; } = url;

        public GrpcChannel Messages(PeerTransportOptions options) => Get(ref _messages, options);

        public GrpcChannel Snapshots(PeerTransportOptions options) => Get(ref _snapshots, options);

        public void Dispose()
        {
            lock (_lock)
            {
                _disposed = true;
                _messages?.Dispose();
                _snapshots?.Dispose();
            }
        }

        private GrpcChannel Get(ref GrpcChannel? channel, PeerTransportOptions options)
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return channel ??= PeerChannelFactory.Create(Url, options);
            }
        }
    }
}
