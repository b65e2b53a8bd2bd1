using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Authpb;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

// authbench: starts one kvstore member (the binary given), fills 1,000 keys, then measures put and range throughput
// with N concurrent clients (one HTTP/2 connection each), alternating rounds with auth off and with auth on (every
// client authenticated with its own token, as a user whose role holds P permissions: P-1 decoys and the one that
// covers the keys). Prints the median ops/s per mode and the on/off ratio. Only 127.0.0.1 is used; the member is
// killed at the end.
var options = BenchOptions.Parse(args);
if (options is null)
{
    await Console.Error.WriteLineAsync("usage: authbench --server PATH [--clients 8] [--seconds 5] [--rounds 3] [--permissions 100]");
    return 2;
}

var dataDir = Directory.CreateTempSubdirectory("kvstore-authbench-").FullName;
var ports = LoopbackPorts.Take(2);
var (clientPort, peerPort) = (ports[0], ports[1]);
var clientUrl = $"http://127.0.0.1:{clientPort}";
var peerUrl = $"http://127.0.0.1:{peerPort}";
using var server = Process.Start(new ProcessStartInfo(options.Server)
{
    ArgumentList =
    {
        "--name", "bench", "--data-dir", dataDir, "--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl,
        "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl, "--initial-cluster", $"bench={peerUrl}",
        "--bcrypt-cost", "4", "--log-level", "warn",
    },
    RedirectStandardOutput = true,
    RedirectStandardError = true,
})!;
server.OutputDataReceived += (_, _) => { };
server.ErrorDataReceived += (_, _) => { };
server.BeginOutputReadLine();
server.BeginErrorReadLine();
try
{
    using var admin = GrpcChannel.ForAddress(clientUrl);
    await WaitReadyAsync(admin);
    var kv = new KV.KVClient(admin);
    var auth = new Etcdserverpb.Auth.AuthClient(admin);
    for (var i = 0; i < 1000; i++)
    {
        await kv.PutAsync(new PutRequest { Key = Key(i), Value = ByteString.CopyFrom(new byte[256]) });
    }

    await auth.UserAddAsync(new AuthUserAddRequest { Name = "root", Password = "rootpw" });
    await auth.UserGrantRoleAsync(new AuthUserGrantRoleRequest { User = "root", Role = "root" });
    await auth.RoleAddAsync(new AuthRoleAddRequest { Name = "bench" });
    for (var i = 0; i < options.Permissions - 1; i++)
    {
        var decoy = ByteString.CopyFromUtf8($"/decoy/{i:D4}/");
        await auth.RoleGrantPermissionAsync(new AuthRoleGrantPermissionRequest
        {
            Name = "bench",
            Perm = new Permission { PermType = Permission.Types.Type.Readwrite, Key = decoy, RangeEnd = ByteString.CopyFromUtf8($"/decoy/{i:D4}0") },
        });
    }

    await auth.RoleGrantPermissionAsync(new AuthRoleGrantPermissionRequest
    {
        Name = "bench",
        Perm = new Permission { PermType = Permission.Types.Type.Readwrite, Key = ByteString.CopyFromUtf8("/bench/"), RangeEnd = ByteString.CopyFromUtf8("/bench0") },
    });
    await auth.UserAddAsync(new AuthUserAddRequest { Name = "bench", Password = "benchpw" });
    await auth.UserGrantRoleAsync(new AuthUserGrantRoleRequest { User = "bench", Role = "bench" });

    var channels = Enumerable.Range(0, options.Clients).Select(_ => GrpcChannel.ForAddress(clientUrl)).ToList();
    var noTokens = channels.Select(_ => new Metadata()).ToList();
    await MeasureAsync(channels, noTokens, 2, put: true); // warm-up (JIT, connections, pages), not counted

    // Off and on alternate, so load changes on the machine hit both alike; the median of the rounds is reported.
    var (offPuts, offRanges, onPuts, onRanges) = (new List<double>(), new List<double>(), new List<double>(), new List<double>());
    Metadata? rootToken = null;
    for (var round = 0; round < options.Rounds; round++)
    {
        offPuts.Add(await MeasureAsync(channels, noTokens, options.Seconds, put: true));
        offRanges.Add(await MeasureAsync(channels, noTokens, options.Seconds, put: false));

        await auth.AuthEnableAsync(new AuthEnableRequest());
        rootToken = new Metadata { { "token", (await auth.AuthenticateAsync(new AuthenticateRequest { Name = "root", Password = "rootpw" })).Token } };
        var tokens = new List<Metadata>();
        foreach (var channel in channels)
        {
            var token = (await new Etcdserverpb.Auth.AuthClient(channel).AuthenticateAsync(new AuthenticateRequest { Name = "bench", Password = "benchpw" })).Token;
            tokens.Add(new Metadata { { "token", token } });
        }

        onPuts.Add(await MeasureAsync(channels, tokens, options.Seconds, put: true));
        onRanges.Add(await MeasureAsync(channels, tokens, options.Seconds, put: false));
        await auth.AuthDisableAsync(new AuthDisableRequest(), rootToken);
    }

    var (offPut, offRange, onPut, onRange) = (Median(offPuts), Median(offRanges), Median(onPuts), Median(onRanges));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"clients={options.Clients} seconds={options.Seconds} rounds={options.Rounds} permissions={options.Permissions} (median of rounds)"));
    Console.WriteLine("op      auth off ops/s   auth on ops/s   on/off");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"put     {offPut,14:F0}   {onPut,13:F0}   {onPut / offPut,6:F3}"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"range   {offRange,14:F0}   {onRange,13:F0}   {onRange / offRange,6:F3}"));
    foreach (var channel in channels)
    {
        channel.Dispose();
    }

    return 0;
}
finally
{
    server.Kill();
    await server.WaitForExitAsync();
    Directory.Delete(dataDir, recursive: true);
}

static async Task<double> MeasureAsync(List<GrpcChannel> channels, List<Metadata> headers, int seconds, bool put)
{
    using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
    var started = Stopwatch.GetTimestamp();
    var counts = await Task.WhenAll(channels.Select(async (channel, c) =>
    {
        var kv = new KV.KVClient(channel);
        var random = new Random(c);
        long done = 0;
        var value = ByteString.CopyFrom(new byte[256]);
        while (!stop.IsCancellationRequested)
        {
            var key = Key(random.Next(1000));
            if (put)
            {
                await kv.PutAsync(new PutRequest { Key = key, Value = value }, headers[c]);
            }
            else
            {
                await kv.RangeAsync(new RangeRequest { Key = key }, headers[c]);
            }

            done++;
        }

        return done;
    }));
    return counts.Sum() / Stopwatch.GetElapsedTime(started).TotalSeconds;
}

static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);

static ByteString Key(int i) => ByteString.CopyFromUtf8(string.Create(CultureInfo.InvariantCulture, $"/bench/k{i:D4}"));

static async Task WaitReadyAsync(GrpcChannel channel)
{
    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
    while (true)
    {
        try
        {
            await new KV.KVClient(channel).RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8("/ready") }, deadline: DateTime.UtcNow.AddSeconds(2));
            return;
        }
        catch (RpcException) when (DateTime.UtcNow < deadline)
        {
            await Task.Delay(200);
        }
    }
}

/// <summary>Command line of the benchmark.</summary>
internal sealed record BenchOptions(string Server, int Clients, int Seconds, int Permissions, int Rounds)
{
    public static BenchOptions? Parse(string[] args)
    {
        string? server = null;
        int clients = 8, seconds = 5, permissions = 100, rounds = 3;
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            var ok = true;
            switch (args[i])
            {
                case "--server":
                    server = args[i + 1];
                    break;
                case "--clients":
                    ok = int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out clients) && clients > 0;
                    break;
                case "--seconds":
                    ok = int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out seconds) && seconds > 0;
                    break;
                case "--rounds":
                    ok = int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out rounds) && rounds > 0;
                    break;
                case "--permissions":
                    ok = int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out permissions) && permissions > 0;
                    break;
                default:
                    ok = false;
                    break;
            }

            if (!ok)
            {
                return null;
            }
        }

        return server is null || args.Length % 2 != 0 ? null : new BenchOptions(server, clients, seconds, permissions, rounds);
    }
}
