using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Monitoring;

namespace KvStore.Server.Tests.Monitoring;

/// <summary>
/// The interceptor's count of streamed responses (grpc_server_msg_sent_total, etcd_network_client_grpc_sent_bytes_total):
/// a response is counted once the stream's write has taken it, whether the write completed at once (a buffered write)
/// or later, and a write that fails is not counted.
/// </summary>
public sealed class GrpcMetricsStreamTests
{
    private static readonly string[] WatchLabels = ["bidi_stream", "etcdserverpb.Watch", "Watch"];

    [Fact]
    public async Task Streamed_responses_are_counted_when_written_at_once_or_later_and_not_when_the_write_fails()
    {
        var metrics = new ServerMetrics();
        var interceptor = new GrpcMetricsInterceptor(metrics);
        var inner = new ScriptedWriter();
        var first = new WatchResponse { WatchId = 1, Created = true };
        var second = new WatchResponse { WatchId = 1, Events = { new Mvccpb.Event { Kv = new Mvccpb.KeyValue { ModRevision = 7 } } } };
        var third = new WatchResponse { WatchId = 2, Canceled = true };

        await interceptor.DuplexStreamingServerHandler<WatchRequest, WatchResponse>(
            new EmptyReader(),
            inner,
            new WatchCallContext(),
            async (_, writer, _) =>
            {
                // Completes at once: counted before WriteAsync returns.
                await writer.WriteAsync(first);
                Sent().Should().Be(1);
                SentBytes().Should().Be(first.CalculateSize());

                // Still pending: counted only once the inner write completes.
                inner.Next = new TaskCompletionSource();
                var pending = writer.WriteAsync(second);
                pending.IsCompleted.Should().BeFalse();
                Sent().Should().Be(1);
                inner.Next.SetResult();
                await pending;
                Sent().Should().Be(2);
                SentBytes().Should().Be(first.CalculateSize() + second.CalculateSize());

                // Fails, at once and later: not counted.
                inner.Next = new TaskCompletionSource();
                inner.Next.SetException(new IOException("reset"));
                await FluentActions.Awaiting(() => writer.WriteAsync(third)).Should().ThrowAsync<IOException>();
                inner.Next = new TaskCompletionSource();
                var failing = writer.WriteAsync(third);
                inner.Next.SetException(new IOException("reset"));
                await FluentActions.Awaiting(() => failing).Should().ThrowAsync<IOException>();
                Sent().Should().Be(2);
            });

        inner.Written.Should().Equal(first, second, third, third);
        metrics.GrpcHandled.WithLabels([.. WatchLabels, "OK"]).Value.Should().Be(1);

        double Sent() => metrics.GrpcSent.WithLabels(WatchLabels).Value;
        double SentBytes() => metrics.ClientSentBytes.Value;
    }

    /// <summary>Completes each write at once, or with <see cref="Next"/> when one is set.</summary>
    private sealed class ScriptedWriter : IServerStreamWriter<WatchResponse>
    {
        public TaskCompletionSource? Next { get; set; }

        public List<WatchResponse> Written { get; } = [];

        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(WatchResponse message)
        {
            Written.Add(message);
            return Next?.Task ?? Task.CompletedTask;
        }
    }

    private sealed class EmptyReader : IAsyncStreamReader<WatchRequest>
    {
        public WatchRequest Current => throw new InvalidOperationException("no requests");

        public Task<bool> MoveNext(CancellationToken cancellationToken) => Task.FromResult(false);
    }

    private sealed class WatchCallContext : ServerCallContext
    {
        protected override string MethodCore => "/etcdserverpb.Watch/Watch";

        protected override string HostCore => "127.0.0.1";

        protected override string PeerCore => "ipv4:127.0.0.1:1";

        protected override DateTime DeadlineCore => DateTime.MaxValue;

        protected override Metadata RequestHeadersCore { get; } = [];

        protected override CancellationToken CancellationTokenCore => CancellationToken.None;

        protected override Metadata ResponseTrailersCore { get; } = [];

        protected override Status StatusCore { get; set; }

        protected override WriteOptions? WriteOptionsCore { get; set; }

        protected override AuthContext AuthContextCore => new(null, []);

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) =>
            throw new NotSupportedException();

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}
