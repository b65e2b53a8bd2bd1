using System.Threading.Channels;
using Grpc.Core;
using KvStore.Raft.Wire;
using KvStore.Server.Node;

namespace KvStore.Server.Lease;

/// <summary>
/// One <c>PeerLease.KeepAlives</c> stream from this follower to one leader, shared by the keep-alives of all this
/// member's clients: a renewal is sent under a fresh correlation id and its answer is matched back by it. Opening an
/// HTTP/2 stream per renewal was what made keep-alives through a follower a fraction as fast as through the leader.
/// <para>
/// The stream breaks for good when the connection or the leader fails, when the leader closes it, or as soon as this
/// member sees another leader (or none): every renewal still waiting then fails with UNAVAILABLE, which
/// <see cref="LeaseForwarder"/> treats as "ask the next leader" exactly like a failed unary call, and it opens a new
/// stream for the next renewal.
/// </para>
/// </summary>
internal sealed class KeepAliveStream
{
    private readonly AsyncDuplexStreamingCall<PeerKeepAliveRequest, PeerKeepAliveResponse> _call;

    // Unbounded: each entry is a renewal a client is waiting for, and a client stream has one in flight at a time.
    private readonly Channel<PeerKeepAliveRequest> _outbox = Channel.CreateUnbounded<PeerKeepAliveRequest>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Dictionary<ulong, TaskCompletionSource<long>> _waiting = [];
    private readonly TaskCompletionSource _broken = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ulong _lastCorrelation;
    private RpcException? _failure; // set once, under _waiting's lock

    /// <summary>Opens the stream on <paramref name="client"/> (the leader's channel) and starts sending and receiving.</summary>
    public KeepAliveStream(PeerLease.PeerLeaseClient client, Metadata headers, ulong leaderId, string urls, NodeState state, IReplicationProgress replication)
    {
        ArgumentNullException.ThrowIfNull(client);
        LeaderId = leaderId;
        Urls = urls;
        _call = client.KeepAlives(new CallOptions(headers));
        _ = RunAsync(state, replication);
    }

    /// <summary>The leader this stream goes to.</summary>
    public ulong LeaderId { get; }

    /// <summary>The leader's peer URLs when the stream was opened (a changed URL needs a new stream).</summary>
    public string Urls { get; }

    /// <summary>True once the stream has failed; renewals then need a new stream.</summary>
    public bool IsBroken
    {
        get
        {
            lock (_waiting)
            {
                return _failure is not null;
            }
        }
    }

    /// <summary>True when the leader does not know the stream (a member of an earlier version): use the unary call.</summary>
    public bool IsUnsupported
    {
        get
        {
            lock (_waiting)
            {
                return _failure?.StatusCode == StatusCode.Unimplemented;
            }
        }
    }

    /// <summary>Renewals sent and not answered yet (each is removed when answered, given up, or the stream breaks).</summary>
    public int Waiting
    {
        get
        {
            lock (_waiting)
            {
                return _waiting.Count;
            }
        }
    }

    /// <summary>
    /// Renews <paramref name="id"/> on the leader: its TTL (0 = no such lease), the leader's error as an
    /// <see cref="RpcException"/>, or UNAVAILABLE when the stream broke first.
    /// </summary>
    public async Task<long> KeepAliveAsync(long id, CancellationToken cancellationToken)
    {
        var answer = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        ulong correlation;
        lock (_waiting)
        {
            if (_failure is { } failure)
            {
                throw new RpcException(failure.Status);
            }

            correlation = ++_lastCorrelation;
            _waiting.Add(correlation, answer);
        }

        _outbox.Writer.TryWrite(new PeerKeepAliveRequest { Correlation = correlation, Id = id });
        using (cancellationToken.UnsafeRegister(static a => ((TaskCompletionSource<long>)a!).TrySetCanceled(), answer))
        {
            try
            {
                return await answer.Task.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Given up (deadline or client gone): a late answer finds nothing to complete.
                lock (_waiting)
                {
                    _waiting.Remove(correlation);
                }

                throw;
            }
        }
    }

    /// <summary>Ends the stream (this member is stopping); renewals still waiting fail over as on a broken stream.</summary>
    public void Close() => Fail(new RpcException(new Status(StatusCode.Unavailable, "lease keep-alive stream closed: member stopping")));

    private async Task RunAsync(NodeState state, IReplicationProgress replication)
    {
        await Task.WhenAll(SendAsync(), ReceiveAsync(), WatchLeaderAsync(state, replication)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    private async Task SendAsync()
    {
        try
        {
            // Ends when Fail completes the outbox; a write in progress then fails with the disposed call.
            while (await _outbox.Reader.WaitToReadAsync().ConfigureAwait(false))
            {
                while (_outbox.Reader.TryRead(out var request))
                {
                    await _call.RequestStream.WriteAsync(request).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is RpcException or OperationCanceledException or InvalidOperationException or IOException)
        {
            Fail(Broken(e));
        }
        finally
        {
            // Whatever ended the loop (first failure wins): no renewal may be left waiting on a stream nobody sends on.
            Fail(new RpcException(new Status(StatusCode.Unavailable, "lease keep-alive stream to the leader stopped sending")));
        }
    }

    private async Task ReceiveAsync()
    {
        try
        {
            while (await _call.ResponseStream.MoveNext(CancellationToken.None).ConfigureAwait(false))
            {
                var response = _call.ResponseStream.Current;
                TaskCompletionSource<long>? answer;
                lock (_waiting)
                {
                    _waiting.Remove(response.Correlation, out answer);
                }

                if (response.ErrorCode == 0)
                {
                    answer?.TrySetResult(response.Ttl);
                }
                else
                {
                    answer?.TrySetException(new RpcException(new Status((StatusCode)response.ErrorCode, response.ErrorMessage)));
                }
            }
        }
        catch (Exception e) when (e is RpcException or OperationCanceledException or InvalidOperationException or IOException)
        {
            Fail(Broken(e));
        }
        finally
        {
            Fail(new RpcException(new Status(StatusCode.Unavailable, "lease keep-alive stream closed by the leader")));
        }
    }

    /// <summary>Breaks the stream as soon as this member sees another leader (or none), so no renewal waits on an old one.</summary>
    private async Task WatchLeaderAsync(NodeState state, IReplicationProgress replication)
    {
        while (!_broken.Task.IsCompleted)
        {
            var next = replication.NextLeaderChangeAsync();
            if (state.LeaderId != LeaderId)
            {
                Fail(new RpcException(new Status(StatusCode.Unavailable, "lease keep-alive stream closed: the leader changed")));
                return;
            }

            await Task.WhenAny(next, _broken.Task).ConfigureAwait(false);
        }
    }

    private static RpcException Broken(Exception e) => e is RpcException { StatusCode: StatusCode.Unimplemented } unsupported
        ? unsupported
        : new RpcException(new Status(StatusCode.Unavailable, "lease keep-alive stream to the leader broke: " + (e is RpcException r ? r.Status.Detail : e.Message)));

    /// <summary>Marks the stream broken (first failure wins) and fails every renewal still waiting with it.</summary>
    private void Fail(RpcException failure)
    {
        TaskCompletionSource<long>[] waiting;
        lock (_waiting)
        {
            if (_failure is not null)
            {
                return;
            }

            _failure = failure;
            waiting = [.. _waiting.Values];
            _waiting.Clear();
        }

        _outbox.Writer.TryComplete();
        _call.Dispose(); // cancels the call: a pending read or write ends
        _broken.TrySetResult();
        foreach (var answer in waiting)
        {
            answer.TrySetException(new RpcException(failure.Status));
        }
    }
}
