using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// The command blocks of docs/install.md and docs/kubernetes.md, run as written where that is practical (ports, the
/// data dir, certificate paths and the binary's path swapped for the test's), so docs that drift from the product
/// fail the suite: the publish profiles, the start command and the probes and etcdctl lines with the output their
/// comments promise, the systemd unit through systemd-analyze, and kubeadm's etcd manifest as a running member.
/// </summary>
public sealed partial class DocCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = ServerProcess.CreateTempDir("kvstore-e2e-docs-");
    private readonly List<Process> _started = [];

    [Fact]
    public async Task Install_md_publish_profiles_produce_the_documented_self_contained_binaries()
    {
        var commands = Lines(Block(Doc("install.md"), "Build a release binary")).ToList();
        commands.Should().HaveCount(3);
        var dotnet = Tools.Require("dotnet", "dotnet-sdk-10.0");
        foreach (var line in commands)
        {
            // "dotnet publish <project> -c Release -p:PublishProfile=<profile>   # <output binary>": the profile's settings,
            // evaluated without the (network-bound, minutes-long) self-contained publish itself. A profile named <rid>-aot
            // is Native AOT for <rid>; the others are ReadyToRun single-file binaries for the runtime they are named after.
            var m = PublishLine().Match(line);
            m.Success.Should().BeTrue("an install.md publish line: {0}", line);
            var profile = m.Groups["profile"].Value;
            var aot = profile.EndsWith("-aot", StringComparison.Ordinal);
            var result = await Tools.RunAsync(
                dotnet,
                ["msbuild", m.Groups["project"].Value, "-nologo", "-p:Configuration=Release", "-p:PublishProfile=" + profile,
                    "-getProperty:PublishDir", "-getProperty:RuntimeIdentifier", "-getProperty:SelfContained", "-getProperty:PublishSingleFile",
                    "-getProperty:PublishReadyToRun", "-getProperty:PublishAot"],
                timeout: TimeSpan.FromMinutes(3),
                workingDirectory: ServerProcess.RepoRoot);
            result.ExitCode.Should().Be(0, result.ToString());
            var properties = JsonDocument.Parse(result.Stdout).RootElement.GetProperty("Properties");
            properties.GetProperty("RuntimeIdentifier").GetString().Should().Be(aot ? profile[..^"-aot".Length] : profile);
            properties.GetProperty("SelfContained").GetString().Should().Be("true");
            if (aot)
            {
                properties.GetProperty("PublishAot").GetString().Should().Be("true", "install.md says {0} is compiled ahead of time", profile);
            }
            else
            {
                properties.GetProperty("PublishAot").GetString().Should().NotBe("true");
                properties.GetProperty("PublishSingleFile").GetString().Should().Be("true");
                properties.GetProperty("PublishReadyToRun").GetString().Should().Be("true", "install.md says the binary is precompiled");
            }

            var binary = Path.GetFullPath(Path.Combine(properties.GetProperty("PublishDir").GetString()!, "kvstore"));
            binary.Should().Be(Path.Combine(ServerProcess.RepoRoot, m.Groups["output"].Value));
        }

        // "kvstore --version prints etcd's four lines ... followed by kvstore's own version".
        var version = await Tools.RunAsync(ServerProcess.KvStorePath, ["--version"]);
        version.ExitCode.Should().Be(0);
        var lines = version.Stdout.TrimEnd('\n').Split('\n');
        lines.Take(4).Select(l => l.Split(':')[0]).Should().Equal("etcd Version", "Git SHA", "Go Version", "Go OS/Arch");
        lines.Length.Should().BeGreaterThan(4, "kvstore's own version follows");
    }

    [Fact]
    public async Task Install_md_start_command_probes_and_etcdctl_lines_work_against_the_member()
    {
        var text = Doc("install.md");
        var ports = LoopbackPorts.Take(3);
        string Local(string s) => s
            .Replace("127.0.0.1:2379", $"127.0.0.1:{ports[0]}", StringComparison.Ordinal)
            .Replace("127.0.0.1:2380", $"127.0.0.1:{ports[1]}", StringComparison.Ordinal)
            .Replace("127.0.0.1:2381", $"127.0.0.1:{ports[2]}", StringComparison.Ordinal)
            .Replace("/tmp/m0.kvstore", Path.Combine(_dir, "m0.kvstore"), StringComparison.Ordinal);

        var start = Lines(Block(text, "Check a member")).Single();
        start.Should().StartWith("kvstore ").And.EndWith(" &");
        Start(Etcdctl.SplitArgs(Local(start["kvstore ".Length..^2])));
        await WaitHttpOkAsync($"http://127.0.0.1:{ports[2]}/readyz");

        var bash = Tools.Require("bash", "bash");
        var checks = Lines(Block(text, "Check a member", 1)).ToList();
        checks.Should().HaveCountGreaterThan(5);
        foreach (var line in checks)
        {
            var m = CommentedLine().Match(Local(line));
            m.Success.Should().BeTrue("each check line says what it prints: {0}", line);
            var run = await Tools.RunAsync(bash, ["-o", "pipefail", "-c", m.Groups["command"].Value]);
            output.WriteLine($"$ {m.Groups["command"].Value}\n{run.Stdout}{run.Stderr}");
            run.ExitCode.Should().Be(0, run.ToString());
            (run.Stdout + run.Stderr).Should().Contain(m.Groups["expect"].Value, "install.md promises it for: {0}", line);
        }
    }

    [Fact]
    public async Task Kvstore_service_passes_systemd_analyze_verify_with_the_built_binary()
    {
        var analyze = Tools.Require("systemd-analyze", "systemd");
        var env = Path.Combine(_dir, "kvstore.env");
        File.Copy(Path.Combine(ServerProcess.RepoRoot, "deploy", "kvstore.env"), env);
        var unit = File.ReadAllText(Path.Combine(ServerProcess.RepoRoot, "deploy", "kvstore.service"));
        unit.Should().Contain("\nExecStart=/usr/local/bin/kvstore\n").And.Contain("\nEnvironmentFile=/etc/kvstore/kvstore.env\n");
        var path = Path.Combine(_dir, "kvstore.service");
        File.WriteAllText(path, unit
            .Replace("\nExecStart=/usr/local/bin/kvstore\n", $"\nExecStart={ServerProcess.KvStorePath}\n", StringComparison.Ordinal)
            .Replace("\nEnvironmentFile=/etc/kvstore/kvstore.env\n", $"\nEnvironmentFile={env}\n", StringComparison.Ordinal));

        var result = await Tools.RunAsync(analyze, ["verify", path]);
        output.WriteLine(result.ToString());
        result.ExitCode.Should().Be(0, result.ToString());
        // An unknown key or a bad value is only a warning (exit 0), so any output about the unit fails too.
        (result.Stdout + result.Stderr).Should().NotContain("kvstore.service");
    }

    [Fact]
    public async Task Kubernetes_md_kubeadm_manifest_starts_a_member_that_answers_its_probes()
    {
        var manifest = Block(Doc("kubernetes.md"), "kubeadm's local etcd with kvstore's binary");
        var command = ManifestList().Matches(manifest.Split("livenessProbe:")[0]).Select(m => m.Groups["item"].Value).ToList();
        command[0].Should().Be("kvstore");

        // The member's address becomes a second loopback address; etcd's ports become free ones; kubeadm's PKI
        // becomes certificates made by deploy/certs/make-certs.sh for that address.
        var (client, peer, metrics) = (LoopbackPorts.TakeOne(), LoopbackPorts.TakeOne(), LoopbackPorts.TakeOne());
        var pki = Path.Combine(_dir, "pki");
        var certs = await Tools.RunAsync(
            Tools.Require("bash", "bash"),
            [Path.Combine(ServerProcess.RepoRoot, "deploy", "certs", "make-certs.sh"), "-o", pki, "cp0=127.0.0.2"],
            timeout: TimeSpan.FromMinutes(2));
        certs.ExitCode.Should().Be(0, certs.ToString());
        string Local(string s) => s
            .Replace("10.0.0.10", "127.0.0.2", StringComparison.Ordinal)
            .Replace(":2379", $":{client}", StringComparison.Ordinal)
            .Replace(":2380", $":{peer}", StringComparison.Ordinal)
            .Replace(":2381", $":{metrics}", StringComparison.Ordinal)
            .Replace("/etc/kubernetes/pki/etcd/ca.crt", Path.Combine(pki, "ca.crt"), StringComparison.Ordinal)
            .Replace("/etc/kubernetes/pki/etcd/", Path.Combine(pki, "cp0") + "/", StringComparison.Ordinal)
            .Replace("/var/lib/etcd", Path.Combine(_dir, "data"), StringComparison.Ordinal);
        Start([.. command.Skip(1).Select(Local)]);

        // kubeadm's probes: the manifest's paths on the metrics port, plain HTTP.
        var probes = ProbeLine().Matches(manifest).Select(m => (Path: m.Groups["path"].Value, Port: m.Groups["port"].Value)).ToList();
        probes.Select(p => p.Path).Should().Equal("/livez", "/readyz");
        foreach (var (probePath, port) in probes)
        {
            port.Should().Be("2381");
            await WaitHttpOkAsync($"http://127.0.0.1:{metrics}{probePath}");
        }

        // A client with the manifest's client-cert-auth: etcdctl with a certificate from the same CA.
        var health = await Tools.RunAsync(
            Tools.Require("etcdctl", "etcd-client"),
            ["--endpoints", $"https://127.0.0.1:{client}", "--cacert", Path.Combine(pki, "ca.crt"), "--cert", Path.Combine(pki, "client.crt"),
                "--key", Path.Combine(pki, "client.key"), "endpoint", "health"],
            env: new Dictionary<string, string> { ["ETCDCTL_API"] = "3" });
        health.ExitCode.Should().Be(0, health.ToString());
        health.Stderr.Should().Contain("is healthy");
    }

    public void Dispose()
    {
        foreach (var p in _started)
        {
            if (!p.HasExited)
            {
                p.Kill();
                p.WaitForExit();
            }

            p.Dispose();
        }

        ServerProcess.TryDelete(_dir);
    }

    [GeneratedRegex(@"^dotnet publish (?<project>\S+) -c Release -p:PublishProfile=(?<profile>\S+)\s+# (?<output>\S+)$")]
    private static partial Regex PublishLine();

    [GeneratedRegex(@"^(?<command>.*?)\s+# (?<expect>.+)$")]
    private static partial Regex CommentedLine();

    [GeneratedRegex(@"^\s+- (?<item>\S+?)(\s+#.*)?$", RegexOptions.Multiline)]
    private static partial Regex ManifestList();

    [GeneratedRegex(@"path: (?<path>/\w+), port: (?<port>\d+)")]
    private static partial Regex ProbeLine();

    private static string Doc(string name) => File.ReadAllText(Path.Combine(ServerProcess.RepoRoot, "docs", name));

    /// <summary>The <paramref name="nth"/> fenced code block of the section headed <paramref name="heading"/>.</summary>
    private static string Block(string doc, string heading, int nth = 0)
    {
        var section = doc.Split("\n## ").Single(s => s.StartsWith(heading + "\n", StringComparison.Ordinal));
        var parts = section.Split("```");
        parts.Length.Should().BeGreaterThan((2 * nth) + 2, "section \"{0}\" has code block {1}", heading, nth);
        var block = parts[(2 * nth) + 1];
        return block[(block.IndexOf('\n', StringComparison.Ordinal) + 1)..];
    }

    /// <summary>The block's commands, continuation lines joined.</summary>
    private static IEnumerable<string> Lines(string block) =>
        block.Replace("\\\n", " ", StringComparison.Ordinal).Split('\n')
            .Select(l => l.Trim())
            .Where(l => l.Length > 0);

    /// <summary>Starts the built binary with <paramref name="args"/>; killed by its PID when the test ends.</summary>
    private void Start(IReadOnlyList<string> args)
    {
        var psi = new ProcessStartInfo(ServerProcess.KvStorePath)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = _dir,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("ETCD", StringComparison.Ordinal)).ToList())
        {
            psi.Environment.Remove(key);
        }

        output.WriteLine($"start: kvstore {string.Join(' ', args)}");
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) { Log(e.Data); } };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) { Log(e.Data); } };
        p.Start();
        _started.Add(p);
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
    }

    private void Log(string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // The test already ended.
        }
    }

    /// <summary>Waits until <paramref name="url"/> answers 200; fails after the start timeout or if the member exits.</summary>
    private async Task WaitHttpOkAsync(string url)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow + ServerProcess.StartTimeout;
        var last = "no answer";
        while (DateTime.UtcNow < deadline)
        {
            _started.Should().OnlyContain(p => !p.HasExited, "the member must keep running");
            try
            {
                using var response = await http.GetAsync(url);
                if (response.IsSuccessStatusCode)
                {
                    return;
                }

                last = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (TaskCanceledException e)
            {
                last = e.Message;
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"{url} not OK after {ServerProcess.StartTimeout.TotalSeconds} s: {last}");
    }
}
