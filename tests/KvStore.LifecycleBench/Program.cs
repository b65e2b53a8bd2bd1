using System.Diagnostics;
using System.Globalization;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Net.Client;

// lifecyclebench: for each server binary given, starts one member on 127.0.0.1, writes KEYS keys of VALUE bytes ROUNDS
// times and compacts (so a defrag has garbage to drop), then runs CLIENTS concurrent putters and records every put's
// latency in three phases of the same shape: nothing else running, `etcdctl defrag`, `etcdctl snapshot save`. A phase
// records the puts that started while the operation ran (or during SECONDS for the baseline). Prints p50/p99/max per
// phase, the operation's duration and dbSize before and after the defrag. Then the throughput of backup and restore on
// the same store: a `snapshot save` with no load (MiB/s of the file written) and a restore of that file into a fresh
// data dir with the server's own tool (`kvstore snapshot restore`, or `etcdctl snapshot restore` for etcd), and a
// defrag with no load after compacting everything (duration and dbSize before and after). Bounded: every phase ends
// with its operation (killed after 5 or 10 minutes); each member is killed at the end and its data dir removed.
// With --mode restart it measures a member with a large store instead (RestartBench.cs): load rate, memory and disk
// after loading KEYS keys once, a paginated list, and how long a SIGTERM restart takes until /health is OK.
var o = Options.Parse(args);
if (o is null)
{
    await Console.Error.WriteLineAsync("usage: lifecyclebench --server PATH [--server PATH2] [--mode defrag|restart] [--keys 60000] [--value 2048] [--value-max BYTES] [--rounds 3] [--clients 16] [--seconds 5] [--etcdctl /usr/bin/etcdctl] [--logs DIR] [--snapshot-dir DIR] [--hold-after-load SECONDS]");
    return 2;
}

Console.WriteLine($"load average at start: {File.ReadAllText("/proc/loadavg").Trim()}");
foreach (var server in o.Servers)
{
    if (o.Mode == "restart")
    {
        await RestartBench.RunAsync(server, o);
    }
    else
    {
        await RunAsync(server, o);
    }
}

Console.WriteLine($"load average at end: {File.ReadAllText("/proc/loadavg").Trim()}");
return 0;

static async Task RunAsync(string serverPath, Options o)
{
    var dataDir = Directory.CreateTempSubdirectory("kvstore-lifecyclebench-").FullName;
    var ports = LoopbackPorts.Take(2);
    var clientUrl = $"http://127.0.0.1:{ports[0]}";
    var peerUrl = $"http://127.0.0.1:{ports[1]}";
    using var server = Process.Start(new ProcessStartInfo(serverPath)
    {
        ArgumentList =
        {
            "--name", "bench", "--data-dir", dataDir, "--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl,
            "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl, "--initial-cluster", $"bench={peerUrl}",
            "--quota-backend-bytes", (8L << 30).ToString(CultureInfo.InvariantCulture),
        },
        RedirectStandardOutput = true,
        RedirectStandardError = true,
    })!;
    // The member's own account of a defrag (kvstore logs how long writes were held off) goes into the report.
    server.OutputDataReceived += (_, e) => EchoDefrag(e.Data);
    server.ErrorDataReceived += (_, e) => EchoDefrag(e.Data);
    server.BeginOutputReadLine();
    server.BeginErrorReadLine();
    try
    {
        var channels = Enumerable.Range(0, o.Clients).Select(_ => GrpcChannel.ForAddress(clientUrl)).ToList();
        var kv = new KV.KVClient(channels[0]);
        var maintenance = new Maintenance.MaintenanceClient(channels[0]);
        await WaitReadyAsync(kv);
        var fill = Stopwatch.StartNew();
        var value = ByteString.CopyFrom(new byte[o.ValueBytes]);
        long revision = 0;
        for (var round = 0; round < o.Rounds; round++)
        {
            var next = 0;
            await Task.WhenAll(channels.Select(async ch =>
            {
                var c = new KV.KVClient(ch);
                int i;
                while ((i = Interlocked.Increment(ref next) - 1) < o.Keys)
                {
                    var r = await c.PutAsync(new PutRequest { Key = Key(i), Value = value });
                    InterlockedMax(ref revision, r.Header.Revision);
                }
            }));
        }

        await kv.CompactAsync(new CompactionRequest { Revision = revision, Physical = true });
        var before = (await maintenance.StatusAsync(new StatusRequest())).DbSize;
        Console.WriteLine($"{Path.GetFileName(serverPath)}: {o.Keys} keys x {o.ValueBytes} B written {o.Rounds} times in {fill.Elapsed.TotalSeconds:F1} s, compacted at {revision}; dbSize {Mib(before)} MiB");

        var endpoint = clientUrl["http://".Length..];
        using var probe = new ServerProbe(server.Id, clientUrl);
        await PhaseAsync("no maintenance", channels, o, probe, null);
        // The putters keep writing through the defrag, so the size on disk is compared with the size in use.
        var beforeDefrag = await maintenance.StatusAsync(new StatusRequest());
        await PhaseAsync("defrag", channels, o, probe, () => Ctl(o.Etcdctl, endpoint, "defrag"));
        var after = await maintenance.StatusAsync(new StatusRequest());
        Console.WriteLine($"  dbSize (in use) before defrag {Mib(beforeDefrag.DbSize)} ({Mib(beforeDefrag.DbSizeInUse)}) MiB, after {Mib(after.DbSize)} ({Mib(after.DbSizeInUse)}) MiB");
        var snapshot = Path.Combine(o.SnapshotDirectory ?? dataDir, $"bench-snapshot-{Environment.ProcessId}.db");
        await PhaseAsync("snapshot save", channels, o, probe, () => Ctl(o.Etcdctl, endpoint, "snapshot", "save", snapshot));
        Console.WriteLine($"  snapshot {Mib(new FileInfo(snapshot).Length)} MiB");
        File.Delete(snapshot);
        await ThroughputAsync("snapshot save (no load)", snapshot, () => Ctl(o.Etcdctl, endpoint, "snapshot", "save", snapshot));
        await ThroughputAsync("snapshot restore", snapshot, () => Restore(serverPath, o.Etcdctl, snapshot, Path.Combine(dataDir, "restored"), peerUrl));
        File.Delete(snapshot);

        // A defrag with nothing else running, after compacting all the history the putters added: the drop in dbSize
        // is what a defrag reclaims, and its duration compares with etcd's (which holds every put meanwhile).
        var uncompacted = await maintenance.StatusAsync(new StatusRequest());
        await kv.CompactAsync(new CompactionRequest { Revision = uncompacted.Header.Revision, Physical = true });
        var quiet = await maintenance.StatusAsync(new StatusRequest());
        var quietTook = Stopwatch.StartNew();
        var quietResult = await RunToEndAsync(Ctl(o.Etcdctl, endpoint, "defrag"));
        var quietAfter = await maintenance.StatusAsync(new StatusRequest());
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  defrag (no load)         {quietTook.Elapsed.TotalSeconds,6:F2} s ({quietResult}): dbSize {Mib(uncompacted.DbSize)} MiB, compacted {Mib(quiet.DbSize)} (in use {Mib(quiet.DbSizeInUse)}), defragmented {Mib(quietAfter.DbSize)} MiB"));
        foreach (var ch in channels)
        {
            ch.Dispose();
        }
    }
    finally
    {
        server.Kill();
        await server.WaitForExitAsync();
        Directory.Delete(dataDir, recursive: true);
    }
}

// Putters run from the start of the phase until the operation (or the baseline's SECONDS) is over; only puts started
// inside that window count. The operation starts one second into the phase, so the putters are warm.
static async Task PhaseAsync(string name, List<GrpcChannel> channels, Options o, ServerProbe probe, Func<Process>? operation)
{
    const int SlowestShown = 12;
    var latencies = new List<double>[channels.Count];
    // When each putter's slowest puts started (UTC), to line them up with the member's log timestamps.
    var slowest = new List<(double Ms, DateTime At)>[channels.Count];
    using var stop = new CancellationTokenSource();
    long windowStart = long.MaxValue;
    long windowEnd = long.MaxValue;
    var failures = 0;
    var clock = Stopwatch.StartNew();
    var putters = channels.Select((ch, n) => Task.Run(async () =>
    {
        var c = new KV.KVClient(ch);
        var mine = latencies[n] = [];
        var slow = slowest[n] = [];
        var value = ByteString.CopyFrom(new byte[o.ValueBytes]);
        var rng = new Random(n);
        while (!stop.IsCancellationRequested)
        {
            var start = clock.ElapsedTicks;
            var startedAt = DateTime.UtcNow;
            try
            {
                await c.PutAsync(new PutRequest { Key = Key(rng.Next(o.Keys)), Value = value });
            }
            catch (Grpc.Core.RpcException)
            {
                // A put that failed (etcd's "request timed out" while a defrag holds its writes) counts with its latency.
                Interlocked.Increment(ref failures);
            }

            var end = clock.ElapsedTicks;
            if (start >= Volatile.Read(ref windowStart) && start < Volatile.Read(ref windowEnd))
            {
                var ms = (end - start) * 1000.0 / Stopwatch.Frequency;
                mine.Add(ms);
                slow.Add((ms, startedAt));
                if (slow.Count > 2 * SlowestShown)
                {
                    slow.Sort((a, b) => b.Ms.CompareTo(a.Ms));
                    slow.RemoveRange(SlowestShown, slow.Count - SlowestShown);
                }
            }
        }
    })).ToList();
    await Task.Delay(1000);
    Volatile.Write(ref windowStart, clock.ElapsedTicks);
    var atStart = await probe.ReadAsync();
    var took = Stopwatch.StartNew();
    string result;
    if (operation is null)
    {
        await Task.Delay(TimeSpan.FromSeconds(o.Seconds));
        result = "ok";
    }
    else
    {
        using var p = operation();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await p.WaitForExitAsync(limit.Token);
        result = p.ExitCode == 0 ? "ok" : $"exit {p.ExitCode}: {(await stderr).Trim()} {(await stdout).Trim()}";
    }

    Volatile.Write(ref windowEnd, clock.ElapsedTicks);
    var opSeconds = took.Elapsed.TotalSeconds;
    var atEnd = await probe.ReadAsync();
    await stop.CancelAsync();
    await Task.WhenAll(putters);
    var all = latencies.SelectMany(l => l).Order().ToList();
    var p50 = all.Count > 0 ? all[all.Count / 2] : 0;
    var p99 = all.Count > 0 ? all[Math.Min(all.Count - 1, (int)(all.Count * 0.99))] : 0;
    var max = all.Count > 0 ? all[^1] : 0;
    var worst = slowest.SelectMany(l => l).OrderByDescending(w => w.Ms).Take(SlowestShown).OrderBy(w => w.At).ToList();
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  {name,-15} {opSeconds,6:F2} s ({result}), {all.Count} puts ({failures} failed): p50 {p50:F1} ms, p99 {p99:F1} ms, max {max:F1} ms; load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"    slowest puts (start UTC, ms): {string.Join(", ", worst.Select(w => $"{w.At:HH:mm:ss.fff} {w.Ms:F0}"))}"));
    Console.WriteLine("    " + ServerProbe.Describe(atStart, atEnd, opSeconds));
}

// Waits (at most 10 minutes) for a process to exit: "ok", or its exit code and output.
static async Task<string> RunToEndAsync(Process started)
{
    using var p = started;
    var stdout = p.StandardOutput.ReadToEndAsync();
    var stderr = p.StandardError.ReadToEndAsync();
    using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(10));
    await p.WaitForExitAsync(limit.Token);
    return p.ExitCode == 0 ? "ok" : $"exit {p.ExitCode}: {(await stderr).Trim()} {(await stdout).Trim()}";
}

// Runs one offline operation on the snapshot file and prints the file's size over the operation's wall time.
static async Task ThroughputAsync(string name, string snapshot, Func<Process> operation)
{
    var took = Stopwatch.StartNew();
    var result = await RunToEndAsync(operation());
    var seconds = took.Elapsed.TotalSeconds;
    var mib = new FileInfo(snapshot).Length / 1048576.0;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  {name,-24} {seconds,6:F2} s ({result}), {mib:F0} MiB: {mib / seconds:F1} MiB/s; load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}"));
}

// etcd 3.4 restores with etcdctl; kvstore with its own verb (the same flags as etcdutl's).
static Process Restore(string serverPath, string etcdctl, string snapshot, string targetDir, string peerUrl)
{
    var isEtcd = Path.GetFileName(serverPath) == "etcd";
    var psi = new ProcessStartInfo(isEtcd ? etcdctl : serverPath) { RedirectStandardOutput = true, RedirectStandardError = true };
    psi.Environment["ETCDCTL_API"] = "3";
    string[] args =
    [
        "snapshot", "restore", snapshot, "--name", "bench", "--data-dir", targetDir, "--initial-cluster", $"bench={peerUrl}",
        "--initial-cluster-token", "bench-restored", "--initial-advertise-peer-urls", peerUrl,
    ];
    foreach (var a in args)
    {
        psi.ArgumentList.Add(a);
    }

    return Process.Start(psi)!;
}

static void EchoDefrag(string? line)
{
    if (line is not null && (line.Contains("Defragmented", StringComparison.Ordinal) || line.Contains("log compacted", StringComparison.Ordinal) || line.Contains("writes held off", StringComparison.Ordinal) || line.Contains("snapshot at applied index", StringComparison.Ordinal) || line.Contains("snapshot written", StringComparison.Ordinal) || line.Contains("snapshot sent", StringComparison.Ordinal)))
    {
        Console.WriteLine("    server: " + line);
    }
}

static Process Ctl(string etcdctl, string endpoint, params string[] args)
{
    var psi = new ProcessStartInfo(etcdctl) { RedirectStandardOutput = true, RedirectStandardError = true };
    psi.Environment["ETCDCTL_API"] = "3";
    psi.ArgumentList.Add("--endpoints");
    psi.ArgumentList.Add(endpoint);
    psi.ArgumentList.Add("--command-timeout=300s");
    foreach (var a in args)
    {
        psi.ArgumentList.Add(a);
    }

    return Process.Start(psi)!;
}

static async Task WaitReadyAsync(KV.KVClient kv)
{
    var deadline = Stopwatch.StartNew();
    while (true)
    {
        try
        {
            await kv.RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8("ready") }, deadline: DateTime.UtcNow.AddSeconds(2));
            return;
        }
        catch (Grpc.Core.RpcException) when (deadline.Elapsed < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(200);
        }
    }
}

static void InterlockedMax(ref long target, long value)
{
    long seen;
    while ((seen = Interlocked.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
    {
    }
}

static string Mib(long bytes) => (bytes / 1048576.0).ToString("F0", CultureInfo.InvariantCulture);

static ByteString Key(int i) => ByteString.CopyFromUtf8(string.Create(CultureInfo.InvariantCulture, $"/bench/k{i:D6}"));

internal sealed record Options(IReadOnlyList<string> Servers, int Keys, int ValueBytes, int Rounds, int Clients, int Seconds, string Etcdctl)
{
    /// <summary>defrag (the latency phases above) or restart (<see cref="RestartBench"/>).</summary>
    public string Mode { get; init; } = "defrag";

    /// <summary>Restart mode: values are ValueBytes..ValueMaxBytes long (uniform, fixed seed); equal by default.</summary>
    public int ValueMaxBytes { get; init; }

    /// <summary>Restart mode: where each member's own output goes (one file per start), if set.</summary>
    public string? LogDirectory { get; init; }

    /// <summary>Where `snapshot save` writes its file (the member's data dir by default, so on the same disk).</summary>
    public string? SnapshotDirectory { get; init; }

    /// <summary>Restart mode: seconds the member is left idle after the load (its PID printed, to inspect it), then its VmRSS again.</summary>
    public int HoldAfterLoadSeconds { get; init; }

    public static Options? Parse(string[] args)
    {
        var servers = new List<string>();
        int keys = 60_000, value = 2048, rounds = 3, clients = 16, seconds = 5, valueMax = 0;
        var etcdctl = "/usr/bin/etcdctl";
        var mode = "defrag";
        string? logs = null;
        string? snapshotDir = null;
        var hold = 0;
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--server": servers.Add(args[i + 1]); break;
                case "--keys": keys = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--value": value = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--rounds": rounds = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--clients": clients = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--seconds": seconds = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--etcdctl": etcdctl = args[i + 1]; break;
                case "--mode" when args[i + 1] is "defrag" or "restart": mode = args[i + 1]; break;
                case "--value-max": valueMax = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                case "--logs": logs = args[i + 1]; break;
                case "--snapshot-dir": snapshotDir = args[i + 1]; break;
                case "--hold-after-load": hold = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
                default: return null;
            }
        }

        return servers.Count == 0 || args.Length % 2 != 0 || (valueMax != 0 && valueMax < value)
            ? null
            : new Options(servers, keys, value, rounds, clients, seconds, etcdctl) { Mode = mode, ValueMaxBytes = Math.Max(valueMax, value), LogDirectory = logs, SnapshotDirectory = snapshotDir, HoldAfterLoadSeconds = hold };
    }
}
