using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace KvStore.Server.Hosting.Http2Authority;

/// <summary>
/// Connection middleware for client ports: puts <see cref="Http2AuthorityRewriter"/> between the transport (or the
/// TLS stream) and Kestrel's HTTP/2 pipeline, for connections that start with the HTTP/2 preface. Server→client bytes
/// are not touched. Kestrel would otherwise reset, as an invalid host, every stream whose <c>:authority</c> is a URL,
/// as etcdctl 3.4 sends for <c>--endpoints http://host:port</c>; etcd accepts those.
/// </summary>
public sealed class Http2AuthorityFilter(int headerTableSize)
{
    /// <summary>The connection middleware.</summary>
    public ConnectionDelegate Middleware(ConnectionDelegate next) => async context =>
    {
        var transport = context.Transport;
        if (!await Http2Preface.StartsWithAsync(transport.Input))
        {
            await next(context);
            return;
        }

        var pipe = new Pipe(new PipeOptions(
            pauseWriterThreshold: 1024 * 1024,
            resumeWriterThreshold: 512 * 1024,
            readerScheduler: PipeScheduler.Inline,
            writerScheduler: PipeScheduler.Inline,
            useSynchronizationContext: false));
        context.Transport = new Filtered(pipe.Reader, transport.Output);
        var pump = PumpAsync(transport.Input, pipe.Writer, headerTableSize);
        try
        {
            await next(context);
        }
        finally
        {
            context.Transport = transport;
            transport.Input.CancelPendingRead();
            await pump;
            await pipe.Reader.CompleteAsync();
        }
    };

    private static async Task PumpAsync(PipeReader input, PipeWriter output, int headerTableSize)
    {
        using var rewriter = new Http2AuthorityRewriter(headerTableSize);
        Exception? error = null;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync();
                if (result.IsCanceled)
                {
                    break;
                }

                var buffer = result.Buffer;
                var consumed = rewriter.Process(buffer, output);
                input.AdvanceTo(consumed, buffer.End);
                var flush = await output.FlushAsync();
                if (result.IsCompleted || flush.IsCompleted || flush.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ConnectionAbortedException or ConnectionResetException or OperationCanceledException or InvalidOperationException)
        {
            error = e;
        }

        await output.CompleteAsync(error);
    }

    private sealed class Filtered(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
