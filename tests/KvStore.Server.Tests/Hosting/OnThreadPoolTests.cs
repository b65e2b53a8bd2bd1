using KvStore.Server.Hosting;
using Microsoft.AspNetCore.Http;

namespace KvStore.Server.Tests.Hosting;

/// <summary>
/// With Kestrel's inline scheduling a request's first handler would run on the socket's I/O thread; the middleware
/// moves HTTP/1.x requests to the thread pool and leaves HTTP/2 streams (already started there) where they are.
/// </summary>
public sealed class OnThreadPoolTests
{
    [Fact]
    public async Task Http1_request_runs_on_the_thread_pool_not_on_the_calling_thread()
    {
        var (ranOnPool, sameThread) = await RunOnDedicatedThreadAsync("HTTP/1.1");

        ranOnPool.Should().BeTrue();
        sameThread.Should().BeFalse();
    }

    [Fact]
    public async Task Http2_stream_continues_on_the_calling_thread()
    {
        var (ranOnPool, sameThread) = await RunOnDedicatedThreadAsync("HTTP/2");

        ranOnPool.Should().BeFalse();
        sameThread.Should().BeTrue();
    }

    /// <summary>Calls the middleware from a thread that is not a thread-pool thread, as an I/O thread is not.</summary>
    private static async Task<(bool RanOnPool, bool SameThread)> RunOnDedicatedThreadAsync(string protocol)
    {
        var result = new TaskCompletionSource<(bool, bool)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var caller = new Thread(() =>
        {
            var callerId = Environment.CurrentManagedThreadId;
            var context = new DefaultHttpContext();
            context.Request.Protocol = protocol;
            _ = ServerHost.OnThreadPool(context, _ =>
            {
                result.TrySetResult((Thread.CurrentThread.IsThreadPoolThread, Environment.CurrentManagedThreadId == callerId));
                return Task.CompletedTask;
            });
        });
        caller.Start();
        return await result.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }
}
