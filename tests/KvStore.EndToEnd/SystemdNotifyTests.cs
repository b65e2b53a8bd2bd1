using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// systemd's notify protocol (Type=notify units, as Debian's and kubespray's etcd.service): the test owns the unix
/// datagram socket systemd would own, starts the real binary with NOTIFY_SOCKET and WATCHDOG_USEC pointing at it, and
/// reads what the member says.
/// </summary>
public sealed class SystemdNotifyTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = ServerProcess.CreateTempDir("kvstore-e2e-notify-");

    [Fact]
    public async Task Ready_comes_once_the_member_serves_then_watchdog_pings_and_stopping_on_SIGTERM()
    {
        var socketPath = Path.Combine(_dir, "notify.sock");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(socketPath));
        using var server = new ServerProcess();
        server.ExtraEnvironment["NOTIFY_SOCKET"] = socketPath;
        server.ExtraEnvironment["WATCHDOG_USEC"] = "400000";
        server.StartProcess();

        var ready = await ReceiveUntilAsync(socket, "READY=1", TimeSpan.FromSeconds(60));
        output.WriteLine($"datagrams until ready: {string.Join(" | ", ready)}");

        // READY=1 means the member serves: a linearizable read succeeds at once, without a retry.
        using (var channel = GrpcChannel.ForAddress(server.ClientUrl))
        {
            var range = await new KV.KVClient(channel).RangeAsync(
                new RangeRequest { Key = ByteString.CopyFromUtf8("/notify") }, deadline: DateTime.UtcNow + TimeSpan.FromSeconds(5));
            range.Header.Revision.Should().BeGreaterThan(0);
        }

        (await ReceiveUntilAsync(socket, "WATCHDOG=1", TimeSpan.FromSeconds(10))).Should().NotBeEmpty("WATCHDOG_USEC=400000 asks for a ping every 200 ms");

        var stopping = ReceiveUntilAsync(socket, "STOPPING=1", TimeSpan.FromSeconds(30));
        var code = await server.TerminateAsync(TimeSpan.FromSeconds(30));
        (await stopping).Should().NotBeEmpty();
        code.Should().BeOneOf(0, 143);
    }

    public void Dispose() => ServerProcess.TryDelete(_dir);

    /// <summary>Datagrams received until one carries <paramref name="expected"/> as a line; fails after the timeout.</summary>
    private static async Task<List<string>> ReceiveUntilAsync(Socket socket, string expected, TimeSpan timeout)
    {
        var received = new List<string>();
        var buffer = new byte[4096];
        var sw = Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            while (true)
            {
                var n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                var text = Encoding.UTF8.GetString(buffer, 0, n);
                received.Add(text);
                if (text.Split('\n').Contains(expected))
                {
                    return received;
                }
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no {expected} within {timeout.TotalSeconds} s ({sw.ElapsedMilliseconds} ms); received: {string.Join(" | ", received)}");
        }
    }
}
