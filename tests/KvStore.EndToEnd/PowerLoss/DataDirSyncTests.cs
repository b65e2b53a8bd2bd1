using System.Diagnostics;
using System.Text.RegularExpressions;
using KvStore.EndToEnd.Cluster;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.PowerLoss;

/// <summary>
/// A directory created on first start is only durable once its parent directory is fsynced: SIGKILL keeps the page
/// cache, so no crash test sees this; a power cut loses the whole member. The server runs under strace and its
/// system calls show whether each directory it created was followed by an fsync of the parent.
/// </summary>
public sealed partial class DataDirSyncTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_first_start_syncs_the_parent_of_every_directory_it_creates_for_the_data_dir()
    {
        var strace = Tools.Require("strace", "strace");
        var root = ServerProcess.CreateTempDir("kvstore-e2e-dirsync-");
        try
        {
            var dataDir = Path.Combine(root, "fresh", "data");
            var ports = LoopbackPorts.Take(2);
            var client = $"http://127.0.0.1:{ports[0]}";
            var peerUrl = $"http://127.0.0.1:{ports[1]}";
            var trace = Path.Combine(root, "strace.log");

            // Traced from the start until it serves, then stopped with SIGTERM: by then it has created everything.
            var psi = new ProcessStartInfo(strace) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var arg in new[]
            {
                "-f", "-qq", "-e", "trace=mkdir,mkdirat,open,openat,fsync", "-o", trace,
                ServerProcess.ServerPath, "--name", "d", "--data-dir", dataDir,
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl, "--initial-cluster", $"d={peerUrl}",
            })
            {
                psi.ArgumentList.Add(arg);
            }

            using var traced = Process.Start(psi)!;
            var stderr = traced.StandardError.ReadToEndAsync();
            _ = traced.StandardOutput.ReadToEndAsync();
            try
            {
                if (!await HealthyAsync(client, traced, TimeSpan.FromSeconds(120)))
                {
                    traced.Kill(entireProcessTree: true);
                    Assert.Fail($"the traced server did not start:\n{await stderr}");
                }

                // strace blocks SIGTERM while it runs a program: the signal goes to the server it started.
                var server = File.ReadAllText($"/proc/{traced.Id}/task/{traced.Id}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Single();
                (await Tools.RunAsync(Tools.Require("kill", "procps"), ["-TERM", server])).ExitCode.Should().Be(0);
                using var stopped = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                await traced.WaitForExitAsync(stopped.Token);
                traced.ExitCode.Should().Be(0, "the server stops cleanly on SIGTERM:\n{0}", await stderr);
            }
            finally
            {
                if (!traced.HasExited)
                {
                    traced.Kill(entireProcessTree: true);
                }
            }

            var lines = await File.ReadAllLinesAsync(trace);

            foreach (var created in new[] { Path.Combine(root, "fresh"), dataDir, Path.Combine(dataDir, "member"), Path.Combine(dataDir, "member", "wal"), Path.Combine(dataDir, "member", "kv"), Path.Combine(dataDir, "member", "kv", "checkpoints") })
            {
                var parent = Path.GetDirectoryName(created)!;
                var mkdir = Array.FindIndex(lines, l => MkdirOf(l) == created);
                mkdir.Should().BeGreaterThanOrEqualTo(0, "the server creates {0} on a first start", created);
                ParentSyncedAfter(lines, mkdir, parent).Should().BeTrue(
                    "the new directory {0} must be made durable by an fsync of {1} (trace from the mkdir on):\n{2}",
                    created,
                    parent,
                    string.Join('\n', lines.Skip(mkdir).Where(l => l.Contains(parent, StringComparison.Ordinal) || l.Contains("fsync", StringComparison.Ordinal)).Take(20)));
            }

            output.WriteLine($"{lines.Length} traced calls; every created directory was followed by an fsync of its parent");
        }
        finally
        {
            ServerProcess.TryDelete(root);
        }
    }

    private static async Task<bool> HealthyAsync(string clientUrl, Process process, TimeSpan timeout)
    {
        using var http = Tools.HttpClient(null);
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < timeout && !process.HasExited)
        {
            try
            {
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                var body = await http.GetStringAsync(new Uri($"{clientUrl}/health"), attempt.Token);
                if (body.Contains("\"health\":\"true\"", StringComparison.Ordinal))
                {
                    return true;
                }
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
            {
                // Not serving yet.
            }

            await Task.Delay(100);
        }

        return false;
    }

    private static string? MkdirOf(string line)
    {
        var m = MkdirCall().Match(line);
        return m.Success ? m.Groups["path"].Value : null;
    }

    /// <summary>An open of <paramref name="dir"/> returning fd N after line <paramref name="from"/>, then fsync(N) = 0 in the same thread.</summary>
    private static bool ParentSyncedAfter(string[] lines, int from, string dir)
    {
        for (var i = from + 1; i < lines.Length; i++)
        {
            var open = OpenCall().Match(lines[i]);
            if (!open.Success || open.Groups["path"].Value != dir)
            {
                continue;
            }

            var tid = open.Groups["tid"].Value;
            var fd = open.Groups["fd"].Value;
            for (var j = i + 1; j < lines.Length; j++)
            {
                var sync = FsyncCall().Match(lines[j]);
                if (sync.Success && sync.Groups["tid"].Value == tid && sync.Groups["fd"].Value == fd)
                {
                    return true;
                }
            }
        }

        return false;
    }

    [GeneratedRegex("""^\d+\s+mkdir(?:at)?\((?:AT_FDCWD, )?"(?<path>[^"]+)", [0-7]+\) = 0""")]
    private static partial Regex MkdirCall();

    [GeneratedRegex("""^(?<tid>\d+)\s+fsync\((?<fd>\d+)\)\s+= 0""")]
    private static partial Regex FsyncCall();

    [GeneratedRegex("""^(?<tid>\d+)\s+open(?:at)?\((?:AT_FDCWD, )?"(?<path>[^"]+)", [^)]*\) = (?<fd>\d+)""")]
    private static partial Regex OpenCall();
}
