using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Auth;
using KvStore.Server.Lease;
using KvStore.Server.Node;
using KvStore.Server.Watch;

namespace KvStore.Server.Api;

/// <summary>
/// etcd's Watch service: one bidirectional stream carries many watchers. Requests go to a <see cref="WatchSession"/>
/// of the <see cref="WatchHub"/>; one send loop writes all responses. With <c>hasleader=true</c> metadata the stream
/// is refused without a leader and cancelled after losing it for <see cref="WatchOptions.NoLeaderCancelAfter"/>.
/// </summary>
public sealed class WatchService(
    WatchHub hub, HeaderFactory headers, ILeaderStatus leader, WatchOptions options, TimeProvider time, RequestAuthenticator auth)
    : Etcdserverpb.Watch.WatchBase
{
    /// <inheritdoc/>
    public override async Task Watch(
        IAsyncStreamReader<WatchRequest> requestStream, IServerStreamWriter<WatchResponse> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(requestStream);
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        var requireLeader = RequiresLeader(context.RequestHeaders);
        if (requireLeader && !leader.HasLeader)
        {
            throw EtcdErrors.NoLeader.Exception();
        }

        using var session = hub.OpenSession();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        // Responses are buffered and flushed once per batch the send loop drains (grpc's BufferHint).
        context.WriteOptions = new WriteOptions(WriteFlags.BufferHint);
        var body = context.GetHttpContext().Response.BodyWriter;
        var send = session.RunSendLoopAsync(
            r => responseStream.WriteAsync(r), headers.Create, stop.Token, async () => await body.FlushAsync(stop.Token).ConfigureAwait(false));
        var receive = ReceiveAsync(requestStream, session, create => IsWatchPermitted(context, create), stop.Token);
        var leaderLost = requireLeader ? WaitForLeaderLossAsync(stop.Token) : Task.Delay(Timeout.Infinite, stop.Token);
        try
        {
            while (true)
            {
                var done = await Task.WhenAny(send, receive, leaderLost).ConfigureAwait(false);
                if (done == receive && receive.IsCompletedSuccessfully)
                {
                    // The client closed its sending side; etcd keeps delivering events until the stream is cancelled.
                    receive = Task.Delay(Timeout.Infinite, stop.Token);
                    continue;
                }

                if (done == leaderLost && leaderLost.IsCompletedSuccessfully)
                {
                    throw EtcdErrors.NoLeader.Exception();
                }

                if (context.CancellationToken.IsCancellationRequested)
                {
                    return; // the client went away
                }

                await done.ConfigureAwait(false); // surfaces a send or receive failure
                return;
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(send, receive, leaderLost).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }
    }

    /// <summary>etcd's cancel reason for a refused watcher: the text of its gRPC PermissionDenied error.</summary>
    private static readonly string PermissionDeniedReason = $"rpc error: code = PermissionDenied desc = {EtcdErrors.PermissionDenied.Message}";

    private static bool RequiresLeader(Metadata headers)
    {
        var value = headers.GetValue("hasleader");
        return value is not null && string.Equals(value, "true", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>etcd refuses a watcher on keys the caller may not read (an unusable token counts as no permission).</summary>
    private bool IsWatchPermitted(ServerCallContext context, WatchCreateRequest create)
    {
        try
        {
            auth.RequireRange(context, create.Key.Span, create.RangeEnd.Span);
            return true;
        }
        catch (EtcdException)
        {
            return false;
        }
    }

    private static async Task ReceiveAsync(
        IAsyncStreamReader<WatchRequest> requests, WatchSession session, Func<WatchCreateRequest, bool> permitted, CancellationToken cancellationToken)
    {
        while (await requests.MoveNext(cancellationToken).ConfigureAwait(false))
        {
            var request = requests.Current;
            switch (request.RequestUnionCase)
            {
                case WatchRequest.RequestUnionOneofCase.CreateRequest when !permitted(request.CreateRequest):
                    session.Refuse(PermissionDeniedReason);
                    break;
                case WatchRequest.RequestUnionOneofCase.CreateRequest:
                    session.Create(request.CreateRequest);
                    break;
                case WatchRequest.RequestUnionOneofCase.CancelRequest:
                    session.Cancel(request.CancelRequest.WatchId);
                    break;
                case WatchRequest.RequestUnionOneofCase.ProgressRequest:
                    session.RequestProgress();
                    break;
                default:
                    break; // etcd ignores unknown requests rather than ending the stream
            }
        }
    }

    private async Task WaitForLeaderLossAsync(CancellationToken cancellationToken)
    {
        // Checked a few times per allowed leaderless period; cancel once no leader was seen for the whole period.
        var step = options.NoLeaderCancelAfter / 3;
        using var timer = new PeriodicTimer(step > TimeSpan.Zero ? step : TimeSpan.FromMilliseconds(100), time);
        var leaderlessSince = (long?)null;
        while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
        {
            if (leader.HasLeader)
            {
                leaderlessSince = null;
                continue;
            }

            leaderlessSince ??= time.GetTimestamp();
            if (time.GetElapsedTime(leaderlessSince.Value) >= options.NoLeaderCancelAfter)
            {
                return;
            }
        }
    }
}
