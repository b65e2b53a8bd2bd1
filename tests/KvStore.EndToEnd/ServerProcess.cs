using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace KvStore.EndToEnd;

/// <summary>
/// One member of the server under test, run as a real process on free 127.0.0.1 ports with its own data dir.
/// The binary is artifacts/bin/KvStore.Server/release/kvstore; KVSTORE_E2E_SERVER=etcd (or a path) swaps it
/// for another server that takes etcd's flags, so every test can be validated against real etcd.
/// Only the process started here is ever signalled, by its PID.
/// </summary>
public sealed class ServerProcess : IDisposable
{
    /// <summary>How long a start may take before the test fails.</summary>
    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    // Servers still running when the test host exits (a test aborted mid-way) are killed then, by PID.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, Process> Running = new();

    private readonly object _logLock = new();
    private readonly List<string> _log = [];
    private readonly IReadOnlyList<string> _extraArgs;
    private readonly string? _executable;
    private Process? _process;
    private bool _ownsDataDir;

    static ServerProcess() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
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

    /// <param name="executable">The server binary; default <see cref="ServerPath"/> (a test comparing with real etcd passes etcd's path).</param>
    public ServerProcess(string? dataDir = null, IReadOnlyList<string>? extraArgs = null, string scheme = "http", string? executable = null)
    {
        _executable = executable;
        _ownsDataDir = dataDir is null;
        DataDir = dataDir ?? CreateTempDir("kvstore-e2e-data-");
        _extraArgs = extraArgs ?? [];
        Scheme = scheme;
        var ports = LoopbackPorts.Take(2);
        (ClientPort, PeerPort) = (ports[0], ports[1]);
        Name = "e2e";
    }

    public string Name { get; }

    public string DataDir { get; }

    public string Scheme { get; }

    public int ClientPort { get; }

    public int PeerPort { get; }

    /// <summary>host:port for etcdctl --endpoints.</summary>
    public string Endpoint => $"127.0.0.1:{ClientPort}";

    public string ClientUrl => $"{Scheme}://127.0.0.1:{ClientPort}";

    public string PeerUrl => $"http://127.0.0.1:{PeerPort}";

    public int? Pid => _process is { HasExited: false } p ? p.Id : null;

    /// <summary>Environment variables the process gets on top of the test's (ETCD_* ones are always removed).</summary>
    public IDictionary<string, string> ExtraEnvironment { get; } = new Dictionary<string, string>();

    /// <summary>True when the process under test is real etcd (KVSTORE_E2E_SERVER=etcd).</summary>
    public static bool IsRealEtcd => ServerSelection() == "etcd" || Path.GetFileName(ServerSelection() ?? string.Empty) == "etcd";

    /// <summary>The executable: kvstore from artifacts, or what KVSTORE_E2E_SERVER names.</summary>
    public static string ServerPath
    {
        get
        {
            var selected = ServerSelection();
            if (selected is null || selected == "kvstore")
            {
                var path = Path.Combine(RepoRoot, "artifacts", "bin", "KvStore.Server", "release", "kvstore");
                if (!File.Exists(path))
                {
                    throw new InvalidOperationException(
                        $"server binary {path} does not exist; run `dotnet build -c Release KvStore.sln` first " +
                        "(or set KVSTORE_E2E_SERVER=etcd to run these tests against real etcd)");
                }

                return path;
            }

            return Tools.Find(selected) ?? throw new InvalidOperationException(
                $"KVSTORE_E2E_SERVER={selected}: not found (for real etcd: apt-get install -y etcd-server)");
        }
    }

    /// <summary>The kvstore binary built from this repository, whatever KVSTORE_E2E_SERVER says.</summary>
    public static string KvStorePath => Path.Combine(RepoRoot, "artifacts", "bin", "KvStore.Server", "release", "kvstore");

    /// <summary>What this instance runs: the executable given to the constructor, else <see cref="ServerPath"/>.</summary>
    public string Executable => _executable ?? ServerPath;

    /// <summary>The directory holding KvStore.sln, found by walking up from the test assembly.</summary>
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "KvStore.sln")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException($"no KvStore.sln above {AppContext.BaseDirectory}");
        }
    }

    /// <summary>The WAL directory inside the data dir (etcd's layout, which KvStore keeps).</summary>
    public string WalDir => Path.Combine(DataDir, "member", "wal");

    /// <summary>Starts the process (again, on the same data dir and ports) and waits until it answers /health.</summary>
    public async Task StartAsync(string clusterState = "new")
    {
        StartProcess(clusterState);
        await WaitHealthyAsync(StartTimeout);
    }

    /// <summary>Starts the process without waiting: for tests that expect it to fail.</summary>
    public void StartProcess(string clusterState = "new")
    {
        if (_process is { HasExited: false })
        {
            throw new InvalidOperationException("already running");
        }

        var psi = new ProcessStartInfo(Executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(DataDir) ?? Path.GetTempPath(),
        };
        string[] args =
        [
            "--name", Name,
            "--data-dir", DataDir,
            "--listen-client-urls", ClientUrl,
            "--advertise-client-urls", ClientUrl,
            "--listen-peer-urls", PeerUrl,
            "--initial-advertise-peer-urls", PeerUrl,
            "--initial-cluster", $"{Name}={PeerUrl}",
            "--initial-cluster-token", "e2e-" + Path.GetFileName(DataDir),
            "--initial-cluster-state", clusterState,
        ];
        foreach (var a in args.Concat(_extraArgs))
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("ETCD", StringComparison.Ordinal)).ToList())
        {
            psi.Environment.Remove(key);
        }

        foreach (var (key, value) in ExtraEnvironment)
        {
            psi.Environment[key] = value;
        }

        AddLog($"### start: {Executable} {string.Join(' ', psi.ArgumentList)}");
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) { AddLog(e.Data); } };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) { AddLog("2> " + e.Data); } };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        Running[p.Id] = p;
        _process = p;
    }

    /// <summary>Polls GET /health until it reports healthy, the process exits, or the deadline passes.</summary>
    public async Task WaitHealthyAsync(TimeSpan timeout)
    {
        using var http = Tools.HttpClient(Scheme == "https" ? this : null);
        var deadline = Stopwatch.StartNew();
        string last = "no answer yet";
        while (deadline.Elapsed < timeout)
        {
            if (_process is null || _process.HasExited)
            {
                throw new InvalidOperationException(
                    $"server exited with code {_process?.ExitCode} during start\n{LogText()}");
            }

            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                using var resp = await http.GetAsync(new Uri($"{ClientUrl}/health"), cts.Token);
                var body = await resp.Content.ReadAsStringAsync(cts.Token);
                last = $"{(int)resp.StatusCode} {body}";
                if (resp.StatusCode == HttpStatusCode.OK && body.Contains("\"health\":\"true\"", StringComparison.Ordinal))
                {
                    return;
                }
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (OperationCanceledException)
            {
                last = "timeout";
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"server not healthy after {timeout.TotalSeconds} s (last /health: {last})\n{LogText()}");
    }

    /// <summary>Waits for the process to exit on its own (for starts that must fail); returns its exit code.</summary>
    public async Task<int> WaitExitAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException("not started");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"server still running after {timeout.TotalSeconds} s\n{LogText()}");
        }

        return p.ExitCode;
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
            AddLog($"### SIGKILL pid {p.Id}");
            p.Kill(entireProcessTree: false);
            if (!p.WaitForExit(30_000))
            {
                throw new InvalidOperationException($"pid {p.Id} did not exit 30 s after SIGKILL");
            }
        }

        p.WaitForExit(); // drain output
        Running.TryRemove(p.Id, out _);
        p.Dispose();
        _process = null;
    }

    /// <summary>SIGTERM, by PID, the process started here; returns its exit code once it has stopped.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException("not started");
        AddLog($"### SIGTERM pid {p.Id}");
        var kill = await Tools.RunAsync(Tools.Require("kill", "procps"), ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException(kill.ToString());
        }

        var code = await WaitExitAsync(timeout);
        p.WaitForExit();
        Running.TryRemove(p.Id, out _);
        p.Dispose();
        _process = null;
        return code;
    }

    /// <summary>Everything the process printed so far, each start separated by a "### start" line.</summary>
    public string LogText()
    {
        lock (_logLock)
        {
            var lines = _log.Count > 400 ? _log.Take(50).Append("... (cut) ...").Concat(_log.Skip(_log.Count - 300)) : _log;
            return string.Join('\n', lines);
        }
    }

    public int LogLineCount
    {
        get
        {
            lock (_logLock)
            {
                return _log.Count;
            }
        }
    }

    /// <summary>A copy of every line so far; stderr lines start with "2> ".</summary>
    public IReadOnlyList<string> LogLines()
    {
        lock (_logLock)
        {
            return [.. _log];
        }
    }

    public string LogSince(int line)
    {
        lock (_logLock)
        {
            var sb = new StringBuilder();
            foreach (var l in _log.Skip(line).TakeLast(300))
            {
                sb.Append(l).Append('\n');
            }

            return sb.ToString();
        }
    }

    public void Dispose()
    {
        Kill();
        if (_ownsDataDir)
        {
            TryDelete(DataDir);
            _ownsDataDir = false;
        }
    }

    public static string CreateTempDir(string prefix)
    {
        var dir = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static string? ServerSelection()
    {
        var v = Environment.GetEnvironmentVariable("KVSTORE_E2E_SERVER");
        return string.IsNullOrWhiteSpace(v) ? null : v.Trim();
    }

    private void AddLog(string line)
    {
        lock (_logLock)
        {
            _log.Add(line);
        }
    }

    internal string? ClientCertDir { get; set; }
}
