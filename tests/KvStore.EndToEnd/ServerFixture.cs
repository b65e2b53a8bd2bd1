using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>One server shared by the tests of a class (each test uses its own key prefix).</summary>
public sealed class ServerFixture : IAsyncLifetime, IDisposable
{
    private ServerProcess? _server;

    public ServerProcess Server => _server ?? throw new InvalidOperationException("fixture not initialized");

    public async Task InitializeAsync()
    {
        _server = new ServerProcess();
        await _server.StartAsync();
    }

    public Task DisposeAsync()
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _server?.Dispose();
        _server = null;
    }
}

/// <summary>
/// Base for tests on a shared server: writes what the server printed during the test into the test's output
/// (xunit shows it for failed tests).
/// </summary>
public abstract class SharedServerTest : IDisposable
{
    private readonly int _logStart;

    protected SharedServerTest(ServerFixture fixture, ITestOutputHelper output)
    {
        Server = fixture.Server;
        Output = output;
        Ctl = new Etcdctl(Server);
        _logStart = Server.LogLineCount;
        Prefix = "/" + GetType().Name + "/" + Guid.NewGuid().ToString("N")[..8] + "/";
    }

    protected ServerProcess Server { get; }

    protected ITestOutputHelper Output { get; }

    protected Etcdctl Ctl { get; }

    /// <summary>A key prefix no other test uses.</summary>
    protected string Prefix { get; }

    public void Dispose()
    {
        Output.WriteLine($"--- server output during this test (pid {Server.Pid}, data {Server.DataDir}):");
        Output.WriteLine(Server.LogSince(_logStart));
        GC.SuppressFinalize(this);
    }
}
