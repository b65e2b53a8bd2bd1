using System.Threading.Channels;
using Etcdserverpb;
using Grpc.Core;
using KvStore.Raft.Wire;
using KvStore.Server.Node;
using KvStore.Server.Peer;

namespace KvStore.Server.Lease;

/// <summary>
/// <c>kvstore.raft.PeerLease</c>: the leader's side of lease forwarding (<see cref="LeaseForwarder"/> is the
/// follower's). Checks the caller's cluster and member IDs like every peer service, then answers through
/// <see cref="LeaderLeaseOps"/> ("etcdserver: not leader" when this member does not lead). Peer port only.
/// </summary>
/// <remarks>
/// A follower's renewals arrive on one <see cref="KeepAlives"/> stream for all its clients: each is started as it is
/// read, so a renewal that waits (for the applied index) holds up no other, and answered under its correlation id
/// when done. The stream ends with "etcdserver: not leader" as soon as this member stops leading, so the follower
/// takes its renewals to the new leader at once.
/// </remarks>
public sealed class PeerLeaseService(LeaderLeaseOps leader, ILeaderStatus leadership, IReplicationProgress replication, PeerTransport transport) : PeerLease.PeerLeaseBase
{
    /// <inheritdoc/>
    public override async Task<LeaseKeepAliveResponse> KeepAlive(LeaseKeepAliveRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        var ttl = await leader.KeepAliveAsync(request.ID, context.CancellationToken).ConfigureAwait(false);
        return new LeaseKeepAliveResponse { ID = request.ID, TTL = ttl ?? 0 };
    }

    /// <inheritdoc/>
    public override async Task KeepAlives(
        IAsyncStreamReader<PeerKeepAliveRequest> requestStream, IServerStreamWriter<PeerKeepAliveResponse> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(requestStream);
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        if (!leadership.IsLeader)
        {
            throw EtcdErrors.NotLeader.Exception();
        }

        // Ended by the follower (its side closed or the call canceled), by a failed write, or by a lost leadership.
        using var ending = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        var lostLeadership = WatchLeadershipAsync(ending);

        // Answers are finished out of order by concurrent renewals; one loop writes them (a stream takes one write at
        // a time). Unbounded: at most one answer per request the follower sent, and the follower waits for each.
        var answers = Channel.CreateUnbounded<PeerKeepAliveResponse>(new UnboundedChannelOptions { SingleReader = true });
        var writer = WriteAnswersAsync(answers.Reader, responseStream, ending);
        var renewing = new Renewals(answers.Writer);
        try
        {
            while (await requestStream.MoveNext(ending.Token).ConfigureAwait(false))
            {
                var request = requestStream.Current;
                var renewal = leader.KeepAliveAsync(request.Id, ending.Token);
                if (renewal.IsCompleted)
                {
                    answers.Writer.TryWrite(Answer(request.Correlation, renewal));
                }
                else
                {
                    renewing.Start(request.Correlation, renewal);
                }
            }
        }
        catch (OperationCanceledException) when (ending.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            // Ended here, not by the follower: answered below.
        }
        finally
        {
            renewing.ReadingDone();
        }

        if (lostLeadership.IsCompletedSuccessfully)
        {
            // Renewals still running would only answer "not leader": drop them and say it once for the stream.
            answers.Writer.TryComplete();
            await writer.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw EtcdErrors.NotLeader.Exception();
        }

        await writer.ConfigureAwait(false);
        await ending.CancelAsync().ConfigureAwait(false); // stops watching the leadership
    }

    /// <inheritdoc/>
    public override Task<LeaseTimeToLiveResponse> TimeToLive(LeaseTimeToLiveRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        return leader.TimeToLiveAsync(request, context.CancellationToken);
    }

    /// <inheritdoc/>
    public override Task<LeaseLeasesResponse> Leases(LeaseLeasesRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        transport.Authenticate(context);
        return leader.LeasesAsync(context.CancellationToken);
    }

    /// <summary>Completes (successfully) once this member no longer leads, after ending the stream; canceled otherwise.</summary>
    private async Task WatchLeadershipAsync(CancellationTokenSource ending)
    {
        while (true)
        {
            // Taken before the check, so a change in between is not missed.
            var next = replication.NextLeaderChangeAsync();
            if (!leadership.IsLeader)
            {
                await ending.CancelAsync().ConfigureAwait(false);
                return;
            }

            await next.WaitAsync(ending.Token).ConfigureAwait(false);
        }
    }

    private static async Task WriteAnswersAsync(
        ChannelReader<PeerKeepAliveResponse> answers, IServerStreamWriter<PeerKeepAliveResponse> responseStream, CancellationTokenSource ending)
    {
        try
        {
            while (await answers.WaitToReadAsync(ending.Token).ConfigureAwait(false))
            {
                while (answers.TryRead(out var answer))
                {
                    await responseStream.WriteAsync(answer, ending.Token).ConfigureAwait(false);
                }
            }
        }
        catch
        {
            // A failed write ends the stream: stop reading requests nobody can be answered for.
            await ending.CancelAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The answer for a finished renewal: the TTL (0 = no such lease), or the error it ended with.</summary>
    private static PeerKeepAliveResponse Answer(ulong correlation, Task<long?> renewal)
    {
        if (renewal.IsCompletedSuccessfully)
        {
            return new PeerKeepAliveResponse { Correlation = correlation, Ttl = renewal.Result ?? 0 };
        }

        var status = renewal.Exception?.InnerException is RpcException e ? e.Status : new Status(StatusCode.Cancelled, "renewal canceled");
        return new PeerKeepAliveResponse { Correlation = correlation, ErrorCode = (int)status.StatusCode, ErrorMessage = status.Detail };
    }

    /// <summary>
    /// Renewals still running when their request was read; the answers channel is completed once reading has ended
    /// and the last of them has answered, so no answer is dropped when the follower closes its side first.
    /// </summary>
    private sealed class Renewals(ChannelWriter<PeerKeepAliveResponse> answers)
    {
        private int _open = 1; // the reading loop itself

        public void Start(ulong correlation, Task<long?> renewal)
        {
            Interlocked.Increment(ref _open);
            _ = AnswerWhenDoneAsync(correlation, renewal);
        }

        public void ReadingDone() => Close();

        private async Task AnswerWhenDoneAsync(ulong correlation, Task<long?> renewal)
        {
            await ((Task)renewal).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            answers.TryWrite(Answer(correlation, renewal));
            Close();
        }

        private void Close()
        {
            if (Interlocked.Decrement(ref _open) == 0)
            {
                answers.TryComplete();
            }
        }
    }
}
