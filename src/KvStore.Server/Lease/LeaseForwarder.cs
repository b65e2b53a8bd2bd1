using System.Diagnostics.CodeAnalysis;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.Raft.Wire;
using KvStore.Server.Node;
using KvStore.Server.Peer;
using KvStore.Server.Replication;

namespace KvStore.Server.Lease;

/// <summary>
/// Runs a leader-only lease request on whichever member leads now: here through <see cref="LeaderLeaseOps"/> when this
/// member leads, else on the leader's <c>kvstore.raft.PeerLease</c> service over the peer port. Like etcd's
/// LeaseRenew/LeaseTimeToLive on a follower, it follows leader changes: a member that answers "not leader" or cannot be
/// reached is left for the next leader, until the request timeout (5 s + 2 × election timeout) ends the attempt with
/// "etcdserver: request timed out" ("etcdserver: no leader" if no leader was known meanwhile).
/// Any other error of the leader (e.g. lease not found) is relayed with its code and message.
/// Renewals, the frequent request, share one <see cref="KeepAliveStream"/> to the leader; the rest are unary calls.
/// </summary>
public sealed class LeaseForwarder : IAsyncDisposable
{
    /// <summary>Pause before retrying when the same leader failed to answer (etcd throttles by 50 ms as well).</summary>
    private static readonly TimeSpan RetryPause = TimeSpan.FromMilliseconds(50);

    private readonly LeaderLeaseOps _local;
    private readonly NodeState _state;
    private readonly IReplicationProgress _replication;
    private readonly MembershipCoordinator _members;
    private readonly PeerTransport _transport;
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, (string Urls, GrpcChannel Channel)> _channels = [];
    private KeepAliveStream? _keepAlives;
    private bool _disposed;
    private long _keepAliveStreamsOpened;

    /// <summary>Creates the forwarder.</summary>
    public LeaseForwarder(LeaderLeaseOps local, NodeState state, IReplicationProgress replication, MembershipCoordinator members, PeerTransport transport)
    {
        _local = local;
        _state = state;
        _replication = replication;
        _members = members;
        _transport = transport;
    }

    /// <summary>Renews a lease on the leader; null when there is no such lease.</summary>
    public async Task<long?> KeepAliveAsync(long id, CancellationToken cancellationToken)
    {
        var ttl = await OnLeaderAsync(
            async ct => await _local.KeepAliveAsync(id, ct).ConfigureAwait(false) ?? 0,
            (leaderId, ct) => RenewOnAsync(leaderId, id, ct),
            cancellationToken).ConfigureAwait(false);
        return ttl > 0 ? ttl : null;
    }

    /// <summary>The lease's TTLs as the leader knows them (header not filled).</summary>
    public Task<Etcdserverpb.LeaseTimeToLiveResponse> TimeToLiveAsync(Etcdserverpb.LeaseTimeToLiveRequest request, CancellationToken cancellationToken) =>
        OnLeaderAsync(
            ct => _local.TimeToLiveAsync(request, ct),
            async (leaderId, ct) => await Client(leaderId).TimeToLiveAsync(request, Call(leaderId, ct)).ConfigureAwait(false),
            cancellationToken);

    /// <summary>Every lease as the leader knows them (header not filled).</summary>
    public Task<Etcdserverpb.LeaseLeasesResponse> LeasesAsync(CancellationToken cancellationToken) =>
        OnLeaderAsync(
            _local.LeasesAsync,
            async (leaderId, ct) => await Client(leaderId).LeasesAsync(new Etcdserverpb.LeaseLeasesRequest(), Call(leaderId, ct)).ConfigureAwait(false),
            cancellationToken);

    /// <summary>How many keep-alive streams this member has opened to leaders: one per leader while nothing breaks.</summary>
    internal long KeepAliveStreamsOpened
    {
        get
        {
            lock (_lock)
            {
                return _keepAliveStreamsOpened;
            }
        }
    }

    /// <summary>Renewals waiting for the leader's answer on the current keep-alive stream.</summary>
    internal int KeepAlivesWaiting => Volatile.Read(ref _keepAlives)?.Waiting ?? 0;

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            _disposed = true;
            _keepAlives?.Close();
            _keepAlives = null;
            foreach (var (_, channel) in _channels.Values)
            {
                channel.Dispose();
            }

            _channels.Clear();
        }

        return ValueTask.CompletedTask;
    }

    private async Task<T> OnLeaderAsync<T>(
        Func<CancellationToken, Task<T>> local, Func<ulong, CancellationToken, Task<T>> remote, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_replication.RequestTimeout);
        var sawLeader = false;
        try
        {
            while (true)
            {
                var leaderId = _state.LeaderId;
                if (leaderId == 0)
                {
                    await _replication.WaitForLeaderAsync(deadline.Token).ConfigureAwait(false);
                    continue;
                }

                sawLeader = true;
                try
                {
                    if (leaderId == _replication.MemberId)
                    {
                        return await local(deadline.Token).ConfigureAwait(false);
                    }

                    return await remote(leaderId, deadline.Token).ConfigureAwait(false);
                }
                catch (RpcException e) when (IsLeaderGone(e) && !deadline.IsCancellationRequested)
                {
                    // The member we asked no longer leads (or is unreachable): wait for news (an apply or a leader
                    // change), at most briefly, and ask again. Subscribed only on this path: a successful call leaves
                    // nothing waiting on the host's signals.
                    using var pause = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token);
                    await Task.WhenAny(_replication.NextChangeAsync(pause.Token), Task.Delay(RetryPause, pause.Token)).ConfigureAwait(false);
                    await pause.CancelAsync().ConfigureAwait(false);
                }
                catch (RpcException e) when (e is not EtcdException && !deadline.IsCancellationRequested)
                {
                    // The leader's own answer (lease not found, too many requests ...): relay it as etcd's error.
                    throw new EtcdException(e.StatusCode, e.Status.Detail);
                }
            }
        }
        catch (Exception e) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested
            && e is OperationCanceledException or RpcException)
        {
            throw (sawLeader ? EtcdErrors.Timeout : EtcdErrors.NoLeader).Exception();
        }
    }

    /// <summary>
    /// The answers that mean "ask the next leader": "not leader" (from here or from the member asked), or — only from a
    /// remote member — a failed connection or a member that refused the call.
    /// </summary>
    private static bool IsLeaderGone(RpcException e) =>
        (e.StatusCode == StatusCode.FailedPrecondition && e.Status.Detail == EtcdErrors.NotLeader.Message)
        || (e is not EtcdException && e.StatusCode is StatusCode.Unavailable or StatusCode.Unknown or StatusCode.Internal
            or StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.InvalidArgument or StatusCode.FailedPrecondition
            or StatusCode.Unimplemented);

    /// <summary>
    /// Renews on the leader's shared stream, opened (again) when there is none yet, it broke, or the leader or its URLs
    /// changed; on the unary call when that leader does not serve the stream (an earlier version).
    /// </summary>
    private async Task<long> RenewOnAsync(ulong leaderId, long id, CancellationToken cancellationToken)
    {
        var urls = UrlsOf(leaderId);
        var stream = Volatile.Read(ref _keepAlives);
        if (!Serves(stream, leaderId, urls))
        {
            var client = Client(leaderId);
            lock (_lock)
            {
                if (_disposed)
                {
                    throw EtcdErrors.Stopped.Exception();
                }

                // Another renewal may have replaced it meanwhile: one stream per leader.
                stream = _keepAlives;
                if (!Serves(stream, leaderId, urls))
                {
                    stream?.Close();
                    stream = new KeepAliveStream(client, Headers(leaderId), leaderId, urls, _state, _replication);
                    _keepAlives = stream;
                    _keepAliveStreamsOpened++;
                }
            }
        }

        if (stream.IsUnsupported)
        {
            var unary = await Client(leaderId).KeepAliveAsync(new Etcdserverpb.LeaseKeepAliveRequest { ID = id }, Call(leaderId, cancellationToken))
                .ConfigureAwait(false);
            return unary.TTL;
        }

        return await stream.KeepAliveAsync(id, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// True when <paramref name="stream"/> can take renewals for <paramref name="leaderId"/> at <paramref name="urls"/>:
    /// open, or known to be refused by that leader (then the unary call is used, no new stream tried).
    /// </summary>
    private static bool Serves([NotNullWhen(true)] KeepAliveStream? stream, ulong leaderId, string urls) =>
        stream is not null && stream.LeaderId == leaderId && stream.Urls == urls && (!stream.IsBroken || stream.IsUnsupported);

    private PeerLease.PeerLeaseClient Client(ulong leaderId) => new(Channel(leaderId));

    private Metadata Headers(ulong leaderId) => PeerHeaders.Create(_transport.Options.ClusterId, _transport.Options.LocalMemberId, leaderId);

    private CallOptions Call(ulong leaderId, CancellationToken cancellationToken) => new(Headers(leaderId), cancellationToken: cancellationToken);

    private string UrlsOf(ulong leaderId)
    {
        var urls = _members.Membership.Get(leaderId)?.PeerUrls ?? [];
        if (urls.Count == 0)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, "leader's peer URLs are not known yet"));
        }

        return string.Join(',', urls);
    }

    private GrpcChannel Channel(ulong leaderId)
    {
        var urls = _members.Membership.Get(leaderId)?.PeerUrls ?? [];
        if (urls.Count == 0)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, "leader's peer URLs are not known yet"));
        }

        var key = string.Join(',', urls);
        lock (_lock)
        {
            if (_channels.TryGetValue(leaderId, out var known) && known.Urls == key)
            {
                return known.Channel;
            }

            known.Channel?.Dispose();
            // No receive limit: a lease list or a lease's keys may exceed any fixed size, as on the client port.
            var channel = PeerChannelFactory.Create(new Uri(urls[0]), _transport.Options, maxReceiveBytes: null);
            _channels[leaderId] = (key, channel);
            return channel;
        }
    }
}
