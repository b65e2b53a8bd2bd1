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
/// </summary>
public sealed class LeaseForwarder : IAsyncDisposable
{
    /// <summary>Pause before retrying when the same leader failed to answer (etcd throttles by 50 ms as well).</summary>
    private static readonly TimeSpan RetryPause = TimeSpan.FromMilliseconds(50);

    private readonly LeaderLeaseOps _local;
    private readonly NodeState _state;
    private readonly RaftHost _host;
    private readonly PeerTransport _transport;
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, (string Urls, GrpcChannel Channel)> _channels = [];

    /// <summary>Creates the forwarder.</summary>
    public LeaseForwarder(LeaderLeaseOps local, NodeState state, RaftHost host, PeerTransport transport)
    {
        _local = local;
        _state = state;
        _host = host;
        _transport = transport;
    }

    /// <summary>Renews a lease on the leader; null when there is no such lease.</summary>
    public async Task<long?> KeepAliveAsync(long id, CancellationToken cancellationToken)
    {
        var ttl = await OnLeaderAsync(
            async ct => await _local.KeepAliveAsync(id, ct).ConfigureAwait(false) ?? 0,
            async (client, call) => (await client.KeepAliveAsync(new Etcdserverpb.LeaseKeepAliveRequest { ID = id }, call).ConfigureAwait(false)).TTL,
            cancellationToken).ConfigureAwait(false);
        return ttl > 0 ? ttl : null;
    }

    /// <summary>The lease's TTLs as the leader knows them (header not filled).</summary>
    public Task<Etcdserverpb.LeaseTimeToLiveResponse> TimeToLiveAsync(Etcdserverpb.LeaseTimeToLiveRequest request, CancellationToken cancellationToken) =>
        OnLeaderAsync(
            ct => _local.TimeToLiveAsync(request, ct),
            async (client, call) => await client.TimeToLiveAsync(request, call).ConfigureAwait(false),
            cancellationToken);

    /// <summary>Every lease as the leader knows them (header not filled).</summary>
    public Task<Etcdserverpb.LeaseLeasesResponse> LeasesAsync(CancellationToken cancellationToken) =>
        OnLeaderAsync(
            _local.LeasesAsync,
            async (client, call) => await client.LeasesAsync(new Etcdserverpb.LeaseLeasesRequest(), call).ConfigureAwait(false),
            cancellationToken);

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            foreach (var (_, channel) in _channels.Values)
            {
                channel.Dispose();
            }

            _channels.Clear();
        }

        return ValueTask.CompletedTask;
    }

    private async Task<T> OnLeaderAsync<T>(
        Func<CancellationToken, Task<T>> local, Func<PeerLease.PeerLeaseClient, CallOptions, Task<T>> remote, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_host.RequestTimeout);
        var sawLeader = false;
        try
        {
            while (true)
            {
                var leaderId = _state.LeaderId;
                if (leaderId == 0)
                {
                    await _host.WaitForLeaderAsync(deadline.Token).ConfigureAwait(false);
                    continue;
                }

                sawLeader = true;
                try
                {
                    if (leaderId == _host.MemberId)
                    {
                        return await local(deadline.Token).ConfigureAwait(false);
                    }

                    var client = new PeerLease.PeerLeaseClient(Channel(leaderId));
                    var headers = PeerHeaders.Create(_transport.Options.ClusterId, _transport.Options.LocalMemberId, leaderId);
                    return await remote(client, new CallOptions(headers, cancellationToken: deadline.Token)).ConfigureAwait(false);
                }
                catch (RpcException e) when (IsLeaderGone(e) && !deadline.IsCancellationRequested)
                {
                    // The member we asked no longer leads (or is unreachable): wait for news (an apply or a leader
                    // change), at most briefly, and ask again. Subscribed only on this path: a successful call leaves
                    // nothing waiting on the host's signals.
                    using var pause = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token);
                    await Task.WhenAny(_host.NextChangeAsync(pause.Token), Task.Delay(RetryPause, pause.Token)).ConfigureAwait(false);
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

    private GrpcChannel Channel(ulong leaderId)
    {
        var urls = _host.Membership.Get(leaderId)?.PeerUrls ?? [];
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
