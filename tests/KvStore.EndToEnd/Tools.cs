using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace KvStore.EndToEnd;

/// <summary>What a finished child process printed.</summary>
public sealed record ProcessResult(string Command, int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"$ {Command}\n[exit {ExitCode}]\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Running external tools (etcdctl, openssl, bash) with bounded time.</summary>
public static class Tools
{
    /// <summary>No single tool invocation may take longer than this.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Finds an executable by path or on PATH.</summary>
    public static string? Find(string name)
    {
        if (name.Contains('/', StringComparison.Ordinal))
        {
            return File.Exists(name) ? Path.GetFullPath(name) : null;
        }

        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin").Split(':'))
        {
            var candidate = Path.Combine(dir, name);
            if (dir.Length > 0 && File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>Finds a tool the tests need, or fails the test (never skips) naming the package to install.</summary>
    public static string Require(string name, string package) =>
        Find(name) ?? throw new InvalidOperationException(
            $"{name} is not installed; the end-to-end tests need it (apt-get install -y {package}, or run tests/run-all.sh which installs it)");

    public static async Task<ProcessResult> RunAsync(
        string file,
        IEnumerable<string> args,
        string? stdin = null,
        IDictionary<string, string>? env = null,
        TimeSpan? timeout = null,
        string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (workingDirectory is not null)
        {
            psi.WorkingDirectory = workingDirectory;
        }

        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("ETCDCTL_", StringComparison.Ordinal)).ToList())
        {
            psi.Environment.Remove(key);
        }

        if (env is not null)
        {
            foreach (var (k, v) in env)
            {
                psi.Environment[k] = v;
            }
        }

        var command = file + " " + string.Join(' ', psi.ArgumentList.Select(Quote));
        using var p = new Process { StartInfo = psi };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.Append(e.Data).Append('\n'); } } };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.Append(e.Data).Append('\n'); } } };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (stdin is not null)
        {
            await p.StandardInput.WriteAsync(stdin);
        }

        p.StandardInput.Close();
        var limit = timeout ?? DefaultTimeout;
        using var cts = new CancellationTokenSource(limit);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill();
            await p.WaitForExitAsync();
            throw new TimeoutException($"{command}: killed after {limit.TotalSeconds} s\nstdout: {stdout}\nstderr: {stderr}");
        }

        p.WaitForExit(); // flush the async readers
        return new ProcessResult(command, p.ExitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>An HttpClient for the client port; with TLS it trusts the test CA and presents the client cert.</summary>
    public static HttpClient HttpClient(ServerProcess? tlsServer)
    {
        if (tlsServer?.ClientCertDir is not { } dir)
        {
            return new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        }

        var ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(dir, "ca.crt"));
        var client = X509Certificate2.CreateFromPemFile(Path.Combine(dir, "client.crt"), Path.Combine(dir, "client.key"));
        var handler = new HttpClientHandler();
        handler.ClientCertificates.Add(client);
        handler.ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
        {
            if (cert is null)
            {
                return false;
            }

            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return chain.Build(cert);
        };
        return new HttpClient(handler, disposeHandler: true) { Timeout = TimeSpan.FromSeconds(10) };
    }

    private static string Quote(string a) => a.Length > 0 && a.All(c => char.IsLetterOrDigit(c) || "-_=./:,@".Contains(c, StringComparison.Ordinal)) ? a : "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
