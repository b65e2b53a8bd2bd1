using System.Net;
using System.Net.Sockets;
using KvStore.Server.Hosting;
using KvStore.Server.Options;
using KvStore.Testing;

namespace KvStore.Server.Tests.Hosting;

public sealed class ListenSocketsTests
{
    [Fact]
    public async Task A_client_that_dials_before_the_server_runs_is_queued_not_refused_and_kestrel_gets_that_socket()
    {
        var ports = LoopbackPorts.Take(2);
        var options = new ServerOptions
        {
            ListenClientUrls = [new Uri($"http://127.0.0.1:{ports[0]}")],
            ListenPeerUrls = [new Uri($"http://127.0.0.1:{ports[1]}")],
        };
        using var sockets = ListenSockets.Bind(options);

        // Nothing accepts yet: the connection completes in the backlog.
        using var early = new TcpClient();
        await early.ConnectAsync(IPAddress.Loopback, ports[0]);
        early.Connected.Should().BeTrue();

        using var taken = sockets.Take(new IPEndPoint(IPAddress.Loopback, ports[0]));
        using var accepted = await taken.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        ((IPEndPoint)accepted.RemoteEndPoint!).Port.Should().Be(((IPEndPoint)early.Client.LocalEndPoint!).Port, "the early connection waits on the socket handed to Kestrel");
    }

    [Fact]
    public void Localhost_binds_the_ipv4_loopback()
    {
        var port = LoopbackPorts.Take(1)[0];
        using var sockets = ListenSockets.Bind(new ServerOptions { ListenClientUrls = [new Uri($"http://localhost:{port}")], ListenPeerUrls = [] });

        using var taken = sockets.Take(new IPEndPoint(IPAddress.Loopback, port));
        taken.IsBound.Should().BeTrue();
        ((IPEndPoint)taken.LocalEndPoint!).Should().Be(new IPEndPoint(IPAddress.Loopback, port));
    }

    [Fact]
    public void A_port_in_use_fails_the_bind_and_releases_the_ports_bound_before_it()
    {
        var ports = LoopbackPorts.Take(2);
        using var busy = new TcpListener(IPAddress.Loopback, ports[1]);
        busy.Start();
        var options = new ServerOptions
        {
            ListenClientUrls = [new Uri($"http://127.0.0.1:{ports[0]}")],
            ListenPeerUrls = [new Uri($"http://127.0.0.1:{ports[1]}")],
        };

        var bind = () => ListenSockets.Bind(options);

        bind.Should().Throw<SocketException>().Which.SocketErrorCode.Should().Be(SocketError.AddressAlreadyInUse);
        using var again = new TcpListener(IPAddress.Loopback, ports[0]);
        again.Start(); // the client port bound before the failure was closed again
        again.LocalEndpoint.Should().Be(new IPEndPoint(IPAddress.Loopback, ports[0]));
    }
}
