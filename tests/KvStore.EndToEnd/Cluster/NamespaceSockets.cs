using System.Collections.Concurrent;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// Opens the test's own TCP connections from inside a network namespace while the test process stays in the
/// host's: a socket belongs to the namespace of the thread that created it, so one dedicated thread enters the
/// namespace (setns(2) changes the calling thread only) and creates every socket; connecting and all I/O then run
/// on any thread. <see cref="ConnectAsync"/> fits <see cref="SocketsHttpHandler.ConnectCallback"/>, so gRPC
/// channels reach members that listen only inside their namespaces.
/// </summary>
public sealed class NamespaceSockets : IDisposable
{
    private const int CloneNewNet = 0x40000000;

    private readonly BlockingCollection<TaskCompletionSource<Socket>> _requests = [];
    private readonly Thread _thread;

    public NamespaceSockets(string netns)
    {
        Netns = netns;
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _thread = new Thread(() => Serve(entered)) { IsBackground = true, Name = "sockets in " + netns };
        _thread.Start();
        if (!entered.Task.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException($"the socket thread did not enter namespace {netns} within 30 s");
        }

        entered.Task.GetAwaiter().GetResult(); // rethrows a failed setns
    }

    public string Netns { get; }

    /// <summary>A new, unconnected IPv4 TCP socket inside the namespace.</summary>
    public Task<Socket> CreateAsync()
    {
        var request = new TaskCompletionSource<Socket>(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Add(request);
        return request.Task;
    }

    /// <summary>Connects to the endpoint of an HTTP connection from inside the namespace (a ConnectCallback).</summary>
    public async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var socket = await CreateAsync();
        try
        {
            socket.NoDelay = true;
            await socket.ConnectAsync(IPAddress.Parse(context.DnsEndPoint.Host), context.DnsEndPoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        _requests.CompleteAdding();
        _thread.Join(TimeSpan.FromSeconds(30));
        _requests.Dispose();
    }

    private void Serve(TaskCompletionSource entered)
    {
        try
        {
            using var ns = File.OpenHandle("/run/netns/" + Netns);
            if (SetNs(ns.DangerousGetHandle(), CloneNewNet) != 0)
            {
                throw new IOException($"setns into network namespace {Netns} failed (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            entered.SetException(e);
            return;
        }

        entered.SetResult();
        // Ends when Dispose completes the queue.
        foreach (var request in _requests.GetConsumingEnumerable())
        {
            try
            {
                request.SetResult(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
            }
            catch (SocketException e)
            {
                request.SetException(e);
            }
        }
    }

    [DllImport("libc", EntryPoint = "setns", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int SetNs(IntPtr fd, int nstype);
}
