using System.Diagnostics;
using System.Globalization;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Net.Client;

/// <summary>
/// lifecyclebench --mode restart: one member with a large store. Loads KEYS keys once (values VALUE..VALUE-MAX bytes,
/// CLIENTS concurrent putters), then reports the load rate, the member's VmRSS and its data dir's disk usage, lists one
/// 10,000-key prefix in pages of 500 (as a Kubernetes list does), stops the member with SIGTERM (its shutdown time),
/// starts it again with the same flags and reports the time until GET /health answers OK, its VmRSS then, and a check
/// that every key is there. Keys are "/bench/pNNN/kNNNNNNN", 10,000 per prefix.
/// </summary>
internal static class RestartBench
{
    private const int PageLimit = 500;
    private const int KeysPerPrefix = 10_000;

    public static async Task RunAsync(string serverPath, Options o)
    {
        var name = Path.GetFileName(serverPath);
        var dataDir = Directory.CreateTempSubdirectory("kvstore-restartbench-").FullName;
        var ports = LoopbackPorts.Take(2);
        var clientUrl = $"http://127.0.0.1:{ports[0]}";
        var peerUrl = $"http://127.0.0.1:{ports[1]}";
        Process? server = null;
        try
        {
            server = Start(serverPath, dataDir, clientUrl, peerUrl, o, "load");
            var channels = Enumerable.Range(0, o.Clients).Select(_ => GrpcChannel.ForAddress(clientUrl)).ToList();
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
            await WaitHealthyAsync(http, clientUrl, server, TimeSpan.FromSeconds(60));

            var load = Stopwatch.StartNew();
            var next = 0;
            long bytes = 0;
            await Task.WhenAll(channels.Select(async (ch, n) =>
            {
                var c = new KV.KVClient(ch);
                var rng = new Random(n);
                var buffer = new byte[o.ValueMaxBytes];
                rng.NextBytes(buffer);
                int i;
                while ((i = Interlocked.Increment(ref next) - 1) < o.Keys)
                {
                    var length = rng.Next(o.ValueBytes, o.ValueMaxBytes + 1);
                    await c.PutAsync(new PutRequest { Key = Key(i), Value = ByteString.CopyFrom(buffer, 0, length) });
                    Interlocked.Add(ref bytes, length);
                }
            }));
            var loadSeconds = load.Elapsed.TotalSeconds;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name}: loaded {o.Keys} keys ({bytes / 1048576.0:F0} MiB of values) with {o.Clients} clients in {loadSeconds:F1} s: {o.Keys / loadSeconds:F0} puts/s; load {LoadAverage()}"));
            Console.WriteLine($"  after load: RSS {RssMib(server.Id)} MiB, disk {DiskMib(dataDir)} MiB");
            if (o.HoldAfterLoadSeconds > 0)
            {
                Console.WriteLine($"  holding {o.HoldAfterLoadSeconds} s (pid {server.Id}, {clientUrl})");
                await Task.Delay(TimeSpan.FromSeconds(o.HoldAfterLoadSeconds));
                Console.WriteLine($"  after {o.HoldAfterLoadSeconds} s idle: RSS {RssMib(server.Id)} MiB");
            }

            var kv = new KV.KVClient(channels[0]);
            await ListPrefixAsync(kv, "after load");

            var stop = Stopwatch.StartNew();
            Terminate(server);
            await server.WaitForExitAsync();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  SIGTERM: exited ({server.ExitCode}) after {stop.Elapsed.TotalSeconds:F2} s; disk {DiskMib(dataDir)} MiB"));
            server.Dispose();

            var restart = Stopwatch.StartNew();
            server = Start(serverPath, dataDir, clientUrl, peerUrl, o, "restart");
            await WaitHealthyAsync(http, clientUrl, server, TimeSpan.FromMinutes(5));
            var healthy = restart.Elapsed.TotalSeconds;
            var rss = RssMib(server.Id);
            var count = (await kv.RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8("/bench/"), RangeEnd = ByteString.CopyFromUtf8("/bench0"), CountOnly = true })).Count;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  restart until /health OK: {healthy:F2} s; RSS then {rss} MiB; keys {count} of {o.Keys}{(count == o.Keys ? string.Empty : " MISSING KEYS")}; load {LoadAverage()}"));
            await ListPrefixAsync(kv, "after restart");
            foreach (var ch in channels)
            {
                ch.Dispose();
            }
        }
        finally
        {
            if (server is not null && !server.HasExited)
            {
                server.Kill();
                await server.WaitForExitAsync();
            }

            server?.Dispose();
            Directory.Delete(dataDir, recursive: true);
        }
    }

    private static Process Start(string serverPath, string dataDir, string clientUrl, string peerUrl, Options o, string phase)
    {
        var server = Process.Start(new ProcessStartInfo(serverPath)
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
        // The member's own log (with its timestamps) says where a slow start spent its time.
        StreamWriter? log = null;
        if (o.LogDirectory is not null)
        {
            Directory.CreateDirectory(o.LogDirectory);
            log = new StreamWriter(Path.Combine(o.LogDirectory, $"{Path.GetFileName(serverPath)}-{phase}.log")) { AutoFlush = true };
        }

        void Write(string? line)
        {
            if (line is not null && log is not null)
            {
                lock (log)
                {
                    log.WriteLine(line);
                }
            }
        }

        server.OutputDataReceived += (_, e) => Write(e.Data);
        server.ErrorDataReceived += (_, e) => Write(e.Data);
        server.BeginOutputReadLine();
        server.BeginErrorReadLine();
        return server;
    }

    private static async Task WaitHealthyAsync(HttpClient http, string clientUrl, Process server, TimeSpan limit)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            if (server.HasExited)
            {
                throw new InvalidOperationException($"the member exited ({server.ExitCode}) before it was healthy");
            }

            try
            {
                using var response = await http.GetAsync(clientUrl + "/health");
                if (response.IsSuccessStatusCode && (await response.Content.ReadAsStringAsync()).Contains("\"health\":\"true\"", StringComparison.Ordinal))
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                // Not listening yet, or not answering within the client's timeout.
            }

            if (waited.Elapsed > limit)
            {
                throw new TimeoutException($"the member was not healthy within {limit}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Lists the first 10,000-key prefix in pages of 500 (each page from the last key of the one before), timed.</summary>
    private static async Task ListPrefixAsync(KV.KVClient kv, string when)
    {
        var prefix = ByteString.CopyFromUtf8("/bench/p000/");
        var end = ByteString.CopyFromUtf8("/bench/p0000");
        var took = Stopwatch.StartNew();
        var from = prefix;
        var keys = 0;
        var pages = 0;
        while (true)
        {
            var page = await kv.RangeAsync(new RangeRequest { Key = from, RangeEnd = end, Limit = PageLimit });
            pages++;
            keys += page.Kvs.Count;
            if (!page.More)
            {
                break;
            }

            // The next page starts right after this page's last key.
            from = ByteString.CopyFrom([.. page.Kvs[^1].Key.Span, 0]);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  list {when}: {keys} keys of /bench/p000/ in {pages} pages of {PageLimit}: {took.Elapsed.TotalMilliseconds:F0} ms"));
    }

    private static ByteString Key(int i) =>
        ByteString.CopyFromUtf8(string.Create(CultureInfo.InvariantCulture, $"/bench/p{i / KeysPerPrefix:D3}/k{i:D7}"));

    private static string RssMib(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        var kib = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        return (kib / 1024.0).ToString("F0", CultureInfo.InvariantCulture);
    }

    /// <summary>Disk blocks the data dir holds (du), not file lengths: a preallocated or sparse file counts as stored.</summary>
    private static string DiskMib(string dir)
    {
        using var du = Process.Start(new ProcessStartInfo("du", ["-sk", dir]) { RedirectStandardOutput = true })!;
        var output = du.StandardOutput.ReadToEnd();
        du.WaitForExit();
        var kib = long.Parse(output.Split('\t')[0], CultureInfo.InvariantCulture);
        return (kib / 1024.0).ToString("F0", CultureInfo.InvariantCulture);
    }

    private static string LoadAverage() => File.ReadAllText("/proc/loadavg").Split(' ')[0];

    /// <summary>SIGTERM, as systemd or Kubernetes stops a member (Process.Kill sends SIGKILL).</summary>
    private static void Terminate(Process process)
    {
        using var kill = Process.Start("kill", ["-TERM", process.Id.ToString(CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill -TERM {process.Id} failed ({kill.ExitCode})");
        }
    }
}
