using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
using KvStore.Raft;
using KvStore.Server.Peer;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Tests.Peer;

/// <summary>Bounded waits for tests: generous, but a hang fails instead of blocking the run.</summary>
internal static class Wait
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public static Task<T> For<T>(ValueTask<T> task) => task.AsTask().WaitAsync(Timeout);

    public static Task For(Task task) => task.WaitAsync(Timeout);

    /// <summary>Waits until the sender to <paramref name="peerId"/> has had at least <paramref name="count"/> acknowledged streams.</summary>
    public static async Task ForConnections(PeerTransport transport, ulong peerId, int count)
    {
        var sender = transport.Sender(peerId) ?? throw new InvalidOperationException($"no peer {peerId}");
        while (true)
        {
            var next = sender.NextConnection;
            if (sender.Connections >= count)
            {
                return;
            }

            await next.WaitAsync(Timeout);
        }
    }
}

/// <summary>A node stand-in: records everything the transport hands it, in channels the tests await.</summary>
internal sealed class RecordingHandler : IPeerTransportHandler
{
    public Channel<Message> Messages { get; } = Channel.CreateUnbounded<Message>();

    public Channel<ReceivedSnapshot> Snapshots { get; } = Channel.CreateUnbounded<ReceivedSnapshot>();

    public Channel<ulong> Unreachable { get; } = Channel.CreateUnbounded<ulong>();

    public Channel<(ulong PeerId, bool Success)> SnapshotReports { get; } = Channel.CreateUnbounded<(ulong, bool)>();

    public ValueTask DeliverAsync(Message message, CancellationToken cancellationToken) => Messages.Writer.WriteAsync(message, cancellationToken);

    /// <summary>When set, a received snapshot is refused with this exception (after being recorded).</summary>
    public Exception? RefuseSnapshots { get; set; }

    public async ValueTask DeliverSnapshotAsync(ReceivedSnapshot snapshot, CancellationToken cancellationToken)
    {
        await Snapshots.Writer.WriteAsync(snapshot, cancellationToken);
        if (RefuseSnapshots is { } refusal)
        {
            throw refusal;
        }
    }

    public void ReportUnreachable(ulong peerId) => Unreachable.Writer.TryWrite(peerId);

    public void ReportSnapshot(ulong peerId, bool success) => SnapshotReports.Writer.TryWrite((peerId, success));
}

/// <summary>Collects formatted log lines so tests can await a particular one.</summary>
internal sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly Channel<string> _added = Channel.CreateUnbounded<string>();

    public IReadOnlyCollection<string> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose()
    {
    }

    /// <summary>Waits for a line containing <paramref name="text"/> (already logged or still to come).</summary>
    public async Task<string> WaitForAsync(string text)
    {
        using var timeout = new CancellationTokenSource(Wait.Timeout);
        while (true)
        {
            var line = await _added.Reader.ReadAsync(timeout.Token);
            if (line.Contains(text, StringComparison.Ordinal))
            {
                return line;
            }
        }
    }

    private sealed class Logger(CapturingLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            var line = $"{logLevel}: {formatter(state, exception)}";
            owner._lines.Enqueue(line);
            owner._added.Writer.TryWrite(line);
        }
    }
}

/// <summary>One member's transport on its own Kestrel instance on 127.0.0.1.</summary>
internal sealed class PeerHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private PeerHost(WebApplication app, ulong memberId, RecordingHandler handler, CapturingLoggerProvider logs, Uri url, Uri? otherUrl)
    {
        _app = app;
        MemberId = memberId;
        Handler = handler;
        Logs = logs;
        Url = url;
        OtherUrl = otherUrl;
        Transport = app.Services.GetRequiredService<PeerTransport>();
    }

    public ulong MemberId { get; }

    public RecordingHandler Handler { get; }

    public CapturingLoggerProvider Logs { get; }

    public PeerTransport Transport { get; }

    /// <summary>The peer listener.</summary>
    public Uri Url { get; }

    /// <summary>A second, non-peer listener (when asked for).</summary>
    public Uri? OtherUrl { get; }

    public static async Task<PeerHost> StartAsync(
        ulong memberId,
        string snapshotDirectory,
        ulong clusterId = 0xC1,
        int port = 0,
        Func<PeerTransportOptions, PeerTransportOptions>? configure = null,
        bool withOtherListener = false,
        bool framedStreams = true)
    {
        var handler = new RecordingHandler();
        var logs = new CapturingLoggerProvider();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(logs);
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Loopback, port, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                if (framedStreams)
                {
                    listen.UsePeerStreams();
                }
            });
            if (withOtherListener)
            {
                kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2);
            }
        });
        builder.Services.Configure<Microsoft.Extensions.Hosting.HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        var options = new PeerTransportOptions
        {
            ClusterId = clusterId,
            LocalMemberId = memberId,
            SnapshotDirectory = snapshotDirectory,
        };
        options = configure?.Invoke(options) ?? options;
        builder.Services.AddPeerTransport(_ => options, _ => handler);
        var app = builder.Build();
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!;
        var peerPort = -1;
        app.MapPeerTransport(context => context.Connection.LocalPort == Volatile.Read(ref peerPort));
        await app.StartAsync();

        var urls = addresses.Addresses.Select(a => new Uri(a)).ToList();
        var peerUrl = port == 0 ? urls[0] : urls.Single(u => u.Port == port);
        Volatile.Write(ref peerPort, peerUrl.Port);
        var other = withOtherListener ? urls.Single(u => u.Port != peerUrl.Port) : null;
        return new PeerHost(app, memberId, handler, logs, peerUrl, other);
    }

    public async ValueTask DisposeAsync()
    {
        using var timeout = new CancellationTokenSource(Wait.Timeout);
        await _app.StopAsync(timeout.Token);
        await _app.DisposeAsync();
    }
}

/// <summary>A scratch directory removed at the end of a test.</summary>
internal sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("kvstore-peer-").FullName;

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
