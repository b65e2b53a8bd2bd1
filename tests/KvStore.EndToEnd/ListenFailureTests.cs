using System.Net;
using System.Net.Sockets;

namespace KvStore.EndToEnd;

public sealed class ListenFailureTests
{
    [Fact]
    public async Task A_member_whose_client_port_is_taken_exits_with_listen_failed_before_it_touches_its_data_dir()
    {
        using var server = new ServerProcess();
        using var busy = new TcpListener(IPAddress.Loopback, server.ClientPort);
        busy.Start();

        server.StartProcess();
        var code = await server.WaitExitAsync(TimeSpan.FromSeconds(60));

        code.Should().Be(1, server.LogText());
        server.LogText().Should().Contain("listen failed").And.Contain("in use");
        Directory.Exists(Path.Combine(server.DataDir, "member")).Should().BeFalse("the ports are bound before the storage is opened");
    }
}
