using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Prometheus;

namespace KvStore.Server.Monitoring;

/// <summary>
/// The client API's gRPC metrics as etcd exports them (go-grpc-prometheus' names and labels): calls started and
/// handled per service, method, call type and status code, stream messages each way, the bytes of every client
/// message, and with --metrics extensive the handling time. The peer service is not counted (etcd's peer traffic is
/// not gRPC).
/// </summary>
public sealed class GrpcMetricsInterceptor(ServerMetrics metrics) : Interceptor
{
    private const string Unary = "unary";
    private const string ClientStream = "client_stream";
    private const string ServerStream = "server_stream";
    private const string BidiStream = "bidi_stream";

    /// <summary>The client API's services; their counters start at zero (with every status code) as etcd's do.</summary>
    private static readonly Google.Protobuf.Reflection.ServiceDescriptor[] ClientServices =
    [
        .. Etcdserverpb.RpcReflection.Descriptor.Services,
        .. V3electionpb.V3ElectionReflection.Descriptor.Services,
        .. V3lockpb.V3LockReflection.Descriptor.Services,
    ];

    /// <summary>Creates every method's series at zero.</summary>
    public static void Preregister(ServerMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        foreach (var service in ClientServices)
        {
            foreach (var method in service.Methods)
            {
                var type = method.IsClientStreaming ? (method.IsServerStreaming ? BidiStream : ClientStream) : (method.IsServerStreaming ? ServerStream : Unary);
                string[] labels = [type, service.FullName, method.Name];
                metrics.GrpcStarted.WithLabels(labels);
                metrics.GrpcReceived.WithLabels(labels);
                metrics.GrpcSent.WithLabels(labels);
                metrics.GrpcHandling?.WithLabels(labels);
                foreach (var code in Enum.GetValues<StatusCode>())
                {
                    metrics.GrpcHandled.WithLabels([.. labels, CodeName(code)]);
                }
            }
        }
    }

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        if (Call.Start(metrics, context, Unary) is not { } call)
        {
            return await continuation(request, context);
        }

        call.Received(request);
        try
        {
            var response = await continuation(request, context);
            call.Sent(response);
            call.Handled(context.Status.StatusCode);
            return response;
        }
        catch (Exception e)
        {
            call.Handled(CodeOf(e));
            throw;
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        if (Call.Start(metrics, context, ClientStream) is not { } call)
        {
            return await continuation(requestStream, context);
        }

        try
        {
            var response = await continuation(new CountingReader<TRequest>(requestStream, call), context);
            call.Sent(response);
            call.Handled(context.Status.StatusCode);
            return response;
        }
        catch (Exception e)
        {
            call.Handled(CodeOf(e));
            throw;
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        if (Call.Start(metrics, context, ServerStream) is not { } call)
        {
            await continuation(request, responseStream, context);
            return;
        }

        call.Received(request);
        try
        {
            await continuation(request, new CountingWriter<TResponse>(responseStream, call), context);
            call.Handled(context.Status.StatusCode);
        }
        catch (Exception e)
        {
            call.Handled(CodeOf(e));
            throw;
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        if (Call.Start(metrics, context, BidiStream) is not { } call)
        {
            await continuation(requestStream, responseStream, context);
            return;
        }

        try
        {
            await continuation(new CountingReader<TRequest>(requestStream, call), new CountingWriter<TResponse>(responseStream, call), context);
            call.Handled(context.Status.StatusCode);
        }
        catch (Exception e)
        {
            call.Handled(CodeOf(e));
            throw;
        }
    }

    /// <summary>Go's spelling of the status codes (grpc-go's codes.Code.String()).</summary>
    internal static string CodeName(StatusCode code) => code == StatusCode.Cancelled ? "Canceled" : code.ToString();

    private static StatusCode CodeOf(Exception e) => e switch
    {
        RpcException rpc => rpc.StatusCode,
        OperationCanceledException => StatusCode.Cancelled,
        _ => StatusCode.Unknown,
    };

    /// <summary>One call's labels and clock.</summary>
    private sealed class Call
    {
        private readonly ServerMetrics _metrics;
        private readonly string[] _labels;
        private readonly long _started = Stopwatch.GetTimestamp();

        // The labelled children, looked up once per call rather than once per streamed message.
        private readonly Counter.Child _received;
        private readonly Counter.Child _sent;

        private Call(ServerMetrics metrics, string[] labels)
        {
            _metrics = metrics;
            _labels = labels;
            _received = metrics.GrpcReceived.WithLabels(labels);
            _sent = metrics.GrpcSent.WithLabels(labels);
        }

        public static Call? Start(ServerMetrics metrics, ServerCallContext context, string type)
        {
            var method = context.Method.AsSpan().TrimStart('/');
            var slash = method.IndexOf('/');
            if (slash < 0 || method.StartsWith("kvstore.", StringComparison.Ordinal))
            {
                return null;
            }

            var call = new Call(metrics, [type, method[..slash].ToString(), method[(slash + 1)..].ToString()]);
            metrics.GrpcStarted.WithLabels(call._labels).Inc();
            return call;
        }

        public void Received(object? message)
        {
            _received.Inc();
            if (message is IMessage m)
            {
                _metrics.ClientReceivedBytes.Inc(m.CalculateSize());
            }
        }

        public void Sent(object? message)
        {
            _sent.Inc();
            if (message is IMessage m)
            {
                _metrics.ClientSentBytes.Inc(m.CalculateSize());
            }
        }

        public void Handled(StatusCode code)
        {
            _metrics.GrpcHandled.WithLabels([.. _labels, CodeName(code)]).Inc();
            _metrics.GrpcHandling?.WithLabels(_labels).Observe(Stopwatch.GetElapsedTime(_started).TotalSeconds);
        }
    }

    private sealed class CountingReader<T>(IAsyncStreamReader<T> inner, Call call) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (!await inner.MoveNext(cancellationToken))
            {
                return false;
            }

            call.Received(inner.Current);
            return true;
        }
    }

    private sealed class CountingWriter<T>(IServerStreamWriter<T> inner, Call call) : IServerStreamWriter<T>
    {
        public WriteOptions? WriteOptions
        {
            get => inner.WriteOptions;
            set => inner.WriteOptions = value;
        }

        public Task WriteAsync(T message) => WriteAsync(message, CancellationToken.None);

        /// <summary>
        /// Counts the message once the inner write has taken it. A buffered write (the watch send loop's) usually
        /// completes at once, and is then counted without a second async step per message; only a write that is still
        /// pending is awaited here.
        /// </summary>
        public Task WriteAsync(T message, CancellationToken cancellationToken)
        {
            var write = inner.WriteAsync(message, cancellationToken);
            if (!write.IsCompletedSuccessfully)
            {
                return SentAfterAsync(write, message);
            }

            call.Sent(message);
            return write;
        }

        private async Task SentAfterAsync(Task write, T message)
        {
            await write;
            call.Sent(message);
        }
    }
}
