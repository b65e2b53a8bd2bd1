using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Grpc.Net.Client;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// One member of a multi-member cluster under test: a real server process started with etcd's flags on its own
/// ports and data dir (optionally inside a network namespace, then launched through `ip netns exec`, which execs
/// the server so the PID is still the server's own). Every signal goes to this PID only.
/// </summary>
/// <remarks>
/// ServerProcess (the colleague's fixture) names every member "e2e" and builds a one-member --initial-cluster
/// itself, so it cannot start members of a cluster; this class takes its binary selection and temp-dir helpers
/// (ServerProcess.ServerPath/CreateTempDir/TryDelete) and adds only what a cluster needs.
/// </remarks>
public sealed class ClusterMember : IDisposable
{
    // Members still running when the test host exits (a test aborted mid-way) are killed then, by PID.
    private static readonly ConcurrentDictionary<int, Process> Running = new();

    private readonly object _logLock = new();
    private readonly List<string> _log = [];
    private Process? _process;
    private GrpcChannel? _channel;

    static ClusterMember() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        foreach (var p in Running.Values)
        {
            try
            {
                p.Kill();
            }
            catch (InvalidOperationException)
            {
            }
        }
    };

    public ClusterMember(string name, string host, int clientPort, int peerPort, string dataDir, string? netns)
    {
        Name = name;
        Host = host;
        ClientPort = clientPort;
        PeerPort = peerPort;
        DataDir = dataDir;
        Netns = netns;
    }

    public string Name { get; private set; }

    /// <summary>The address the peer listener binds: 127.0.0.1, or this member's address inside its namespace.</summary>
    public string Host { get; }

    public int ClientPort { get; }

    public int PeerPort { get; }

    public string DataDir { get; }

    /// <summary>The network namespace the member runs in, or null for the host's loopback.</summary>
    public string? Netns { get; }

    /// <summary>Clients reach a member on 127.0.0.1, or on its own address when it lives in a namespace.</summary>
    public string ClientUrl => $"http://{Endpoint}";

    public string Endpoint => Netns is null ? $"127.0.0.1:{ClientPort}" : $"{Host}:{ClientPort}";

    public string PeerUrl => $"{PeerScheme}://{Host}:{PeerPort}";

    /// <summary>"https" for a cluster whose peers talk TLS.</summary>
    public string PeerScheme { get; init; } = "http";

    /// <summary>The member ID, learned from its Status once it has started (0 before).</summary>
    public ulong Id { get; set; }

    public string HexId => Id.ToString("x", CultureInfo.InvariantCulture);

    public int? Pid => _process is { HasExited: false } p ? p.Id : null;

    public bool IsRunning => _process is { HasExited: false };

    /// <summary>The flags of the last start (without the binary).</summary>
    public IReadOnlyList<string> LastArgs { get; private set; } = [];

    /// <summary>Flags only this member gets, after the cluster-wide ones (e.g. a quota set differently per member).</summary>
    public IReadOnlyList<string> OwnArgs { get; set; } = [];

    /// <summary>
    /// For a member in a namespace: where the test's client connections are opened (a namespace on the same
    /// bridge, see <see cref="PeerNetwork"/>); null for a member on the host's loopback.
    /// </summary>
    public NamespaceSockets? ClientSockets { get; init; }

    /// <summary>A gRPC channel to the client port of the current incarnation (no retries).</summary>
    public GrpcChannel Channel => _channel ??= CreateChannel(new GrpcChannelOptions());

    /// <summary>A new gRPC channel to the client port, opened from the clients' namespace when the member has one.</summary>
    public GrpcChannel CreateChannel(GrpcChannelOptions options)
    {
        if (ClientSockets is { } sockets)
        {
            options.HttpHandler = new SocketsHttpHandler { ConnectCallback = sockets.ConnectAsync, EnableMultipleHttp2Connections = true };
            options.DisposeHttpClient = true;
        }

        return GrpcChannel.ForAddress(ClientUrl, options);
    }

    /// <summary>Starts the process with etcd's flags; does not wait for it to be healthy.</summary>
    public void Start(string initialCluster, string state, string token, IReadOnlyList<string> extraArgs, string? newName = null)
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"{Name} is already running (pid {_process!.Id})");
        }

        DisposeProcess();
        _channel?.Dispose();
        _channel = null; // a fresh channel per incarnation: no reconnect backoff left over from the dead one
        if (newName is not null)
        {
            Name = newName;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(DataDir)!);
        List<string> args =
        [
            "--name", Name,
            "--data-dir", DataDir,
            "--listen-client-urls", ClientUrl,
            "--advertise-client-urls", ClientUrl,
            "--listen-peer-urls", PeerUrl,
            "--initial-advertise-peer-urls", PeerUrl,
            "--initial-cluster", initialCluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", token,
            // "{name}" in a flag stands for the member's name (per-member certificate paths).
            .. extraArgs.Select(a => a.Replace("{name}", Name, StringComparison.Ordinal)),
            .. OwnArgs,
        ];
        LastArgs = args;
        var server = ServerProcess.ServerPath;
        var psi = Netns is null
            ? new ProcessStartInfo(server)
            : new ProcessStartInfo(Tools.Require("ip", "iproute2"));
        if (Netns is not null)
        {
            foreach (var a in new[] { "netns", "exec", Netns, server })
            {
                psi.ArgumentList.Add(a);
            }
        }

        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        psi.UseShellExecute = false;
        psi.WorkingDirectory = Path.GetDirectoryName(DataDir)!;
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("ETCD", StringComparison.Ordinal)).ToList())
        {
            psi.Environment.Remove(key);
        }

        AddLog($"### start {Name}: {psi.FileName} {string.Join(' ', psi.ArgumentList)}");
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) { AddLog(e.Data); } };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) { AddLog(e.Data); } };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        Running[p.Id] = p;
        _process = p;
        AddLog($"### {Name} pid {p.Id}");
    }

    /// <summary>Throws with the member's output when the process has exited on its own.</summary>
    public void EnsureRunning(string when)
    {
        if (_process is { HasExited: true } p)
        {
            throw new InvalidOperationException($"{Name} exited with code {p.ExitCode} {when}\n{LogTail(80)}");
        }
    }

    /// <summary>SIGKILL, by PID, the process started here; waits until it is gone.</summary>
    public void Kill()
    {
        var p = _process;
        if (p is null)
        {
            return;
        }

        if (!p.HasExited)
        {
            AddLog($"### SIGKILL {Name} pid {p.Id}");
            p.Kill(entireProcessTree: false);
            if (!p.WaitForExit(30_000))
            {
                throw new InvalidOperationException($"pid {p.Id} did not exit 30 s after SIGKILL");
            }
        }

        DisposeProcess();
    }

    /// <summary>Waits for the process to exit on its own (a start expected to fail); kills it and throws after the timeout.</summary>
    public async Task<int> WaitExitAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException($"{Name} is not running");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            var tail = LogTail(60);
            Kill();
            throw new TimeoutException($"{Name} still running {timeout.TotalSeconds} s after start (killed now)\n{tail}");
        }

        return p.ExitCode;
    }

    /// <summary>SIGTERM, by PID; returns the exit code once the process has stopped (SIGKILL and throw after the timeout).</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException($"{Name} is not running");
        AddLog($"### SIGTERM {Name} pid {p.Id}");
        await SignalAsync("TERM");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            var tail = LogTail(60);
            Kill();
            throw new TimeoutException($"{Name} still running {timeout.TotalSeconds} s after SIGTERM (killed now)\n{tail}");
        }

        var code = p.ExitCode;
        DisposeProcess();
        return code;
    }

    /// <summary>Sends a signal (STOP, CONT, TERM) with kill(1) to this member's PID only.</summary>
    public async Task SignalAsync(string signal)
    {
        var pid = Pid ?? throw new InvalidOperationException($"{Name} is not running");
        AddLog($"### SIG{signal} {Name} pid {pid}");
        var r = await Tools.RunAsync(Tools.Require("kill", "procps"), [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)]);
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException(r.ToString());
        }
    }

    public string LogTail(int lines)
    {
        lock (_logLock)
        {
            var sb = new StringBuilder();
            if (_log.Count > lines)
            {
                sb.Append("... (").Append(_log.Count - lines).Append(" earlier lines cut) ...\n");
            }

            foreach (var l in _log.TakeLast(lines))
            {
                sb.Append(l).Append('\n');
            }

            return sb.ToString();
        }
    }

    /// <summary>
    /// The first <paramref name="head"/> and last <paramref name="tail"/> lines, each run of stack-frame lines cut
    /// to its first four: what goes into the test output (the start shows identity and bootstrap, the end the fault).
    /// </summary>
    public string LogSummary(int head, int tail)
    {
        List<string> lines;
        lock (_logLock)
        {
            lines = [];
            var frames = 0;
            foreach (var l in _log)
            {
                var isFrame = l.TrimStart().StartsWith("at ", StringComparison.Ordinal) || l.Contains("--- End of stack trace", StringComparison.Ordinal);
                frames = isFrame ? frames + 1 : 0;
                if (frames <= 4)
                {
                    lines.Add(l);
                }
            }
        }

        if (lines.Count <= head + tail)
        {
            return string.Join('\n', lines);
        }

        return string.Join('\n', lines.Take(head).Append($"... ({lines.Count - head - tail} lines cut) ...").Concat(lines.TakeLast(tail)));
    }

    /// <summary>Everything the member printed (all incarnations).</summary>
    public string FullLog()
    {
        lock (_logLock)
        {
            return string.Join('\n', _log);
        }
    }

    /// <summary>True when any line the member printed (this test) contains the text.</summary>
    public bool LogContains(string text)
    {
        lock (_logLock)
        {
            return _log.Any(l => l.Contains(text, StringComparison.OrdinalIgnoreCase));
        }
    }

    public void AddLog(string line)
    {
        lock (_logLock)
        {
            _log.Add(line);
        }
    }

    public void Dispose()
    {
        try
        {
            Kill();
        }
        finally
        {
            _channel?.Dispose();
            _channel = null;
        }
    }

    private void DisposeProcess()
    {
        var p = _process;
        if (p is null)
        {
            return;
        }

        p.WaitForExit(); // drain the output readers
        Running.TryRemove(p.Id, out _);
        AddLog($"### {Name} exited ({p.ExitCode})");
        p.Dispose();
        _process = null;
    }
}
