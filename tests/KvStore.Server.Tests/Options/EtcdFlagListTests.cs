using System.Collections;
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using KvStore.Server.Hosting;
using KvStore.Server.Options;

namespace KvStore.Server.Tests.Options;

/// <summary>
/// Every flag etcd 3.4 prints in <c>etcd --help</c> (read from the installed etcd) and every flag etcd 3.5 and 3.6
/// register is parsed: with etcd's default it is accepted; with another value it either takes effect (the parsed
/// options change), is accepted with a warning naming it (nothing to tune in kvstore), or stops the start with an
/// error naming the flag and why.
/// </summary>
public sealed partial class EtcdFlagListTests
{
    /// <summary>etcd 3.5's flags (server/etcdmain and server/embed config at v3.5.21), beyond those of 3.4.</summary>
    private static readonly string[] Etcd35 =
    [
        "auth-token", "auth-token-ttl", "auto-compaction-mode", "auto-compaction-retention", "auto-tls", "backend-batch-interval",
        "backend-batch-limit", "backend-bbolt-freelist-type", "bcrypt-cost", "cert-file", "cipher-suites", "client-cert-allowed-hostname",
        "client-cert-auth", "client-cert-file", "client-crl-file", "client-key-file", "cors", "data-dir", "discovery", "discovery-fallback",
        "discovery-proxy", "discovery-srv", "discovery-srv-name", "election-timeout", "enable-grpc-gateway", "enable-log-rotation",
        "enable-pprof", "enable-v2", "experimental-bootstrap-defrag-threshold-megabytes", "experimental-compact-hash-check-enabled",
        "experimental-compact-hash-check-time", "experimental-compaction-batch-limit", "experimental-compaction-sleep-interval",
        "experimental-corrupt-check-time", "experimental-distributed-tracing-address", "experimental-distributed-tracing-instance-id",
        "experimental-distributed-tracing-sampling-rate", "experimental-distributed-tracing-service-name", "experimental-downgrade-check-time",
        "experimental-enable-distributed-tracing", "experimental-enable-lease-checkpoint", "experimental-enable-lease-checkpoint-persist",
        "experimental-enable-v2v3", "experimental-initial-corrupt-check", "experimental-lease-checkpoint-interval", "experimental-max-learners",
        "experimental-memory-mlock", "experimental-peer-skip-client-san-verification", "experimental-snapshot-catchup-entries",
        "experimental-stop-grpc-service-on-defrag", "experimental-txn-mode-write-with-shared-buffer", "experimental-wait-cluster-ready-timeout",
        "experimental-warning-apply-duration", "experimental-warning-unary-request-duration", "experimental-watch-progress-notify-interval",
        "force-new-cluster", "grpc-keepalive-interval", "grpc-keepalive-min-time", "grpc-keepalive-timeout", "heartbeat-interval",
        "host-whitelist", "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token",
        "initial-election-tick-advance", "key-file", "listen-client-http-urls", "listen-client-urls", "listen-metrics-urls",
        "listen-peer-urls", "log-format", "log-level", "log-outputs", "log-rotation-config-json", "logger", "max-concurrent-streams",
        "max-request-bytes", "max-snapshots", "max-txn-ops", "max-wals", "metrics", "name", "peer-auto-tls", "peer-cert-allowed-cn",
        "peer-cert-allowed-hostname", "peer-cert-file", "peer-client-cert-auth", "peer-client-cert-file", "peer-client-key-file",
        "peer-crl-file", "peer-key-file", "peer-trusted-ca-file", "pre-vote", "proxy", "proxy-dial-timeout", "proxy-failure-wait",
        "proxy-read-timeout", "proxy-refresh-interval", "proxy-write-timeout", "quota-backend-bytes", "raft-read-timeout",
        "raft-write-timeout", "self-signed-cert-validity", "snapshot-count", "socket-reuse-address", "socket-reuse-port",
        "strict-reconfig-check", "tls-max-version", "tls-min-version", "trusted-ca-file", "unsafe-no-fsync", "v2-deprecation", "wal-dir",
    ];

    /// <summary>etcd 3.6's flags (v3.6.14) that 3.5 did not have: the un-prefixed names of experimental flags,
    /// v3 discovery, and --feature-gates.</summary>
    private static readonly string[] Etcd36 =
    [
        "bootstrap-defrag-threshold-megabytes", "compact-hash-check-time", "compaction-batch-limit", "compaction-sleep-interval",
        "corrupt-check-time", "discovery-cacert", "discovery-cert", "discovery-dial-timeout", "discovery-endpoints",
        "discovery-insecure-skip-tls-verify", "discovery-insecure-transport", "discovery-keepalive-time", "discovery-keepalive-timeout",
        "discovery-key", "discovery-password", "discovery-request-timeout", "discovery-token", "discovery-user",
        "distributed-tracing-address", "distributed-tracing-instance-id", "distributed-tracing-sampling-rate",
        "distributed-tracing-service-name", "downgrade-check-time", "enable-distributed-tracing", "feature-gates", "max-learners",
        "memory-mlock", "peer-skip-client-san-verification", "snapshot-catchup-entries", "warning-apply-duration",
        "warning-unary-request-duration", "watch-progress-notify-interval",
    ];

    /// <summary>A valid value other than etcd's default, where the kind's generic sample would not do (extra flags
    /// the value needs come after it).</summary>
    private static readonly Dictionary<string, string[]> Samples = new(StringComparer.Ordinal)
    {
        ["heartbeat-interval"] = ["50"],
        ["election-timeout"] = ["2000"],
        ["initial-cluster"] = ["default=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380"],
        ["initial-advertise-peer-urls"] = ["http://127.0.0.1:2380", "--initial-cluster=default=http://127.0.0.1:2380"],
        ["initial-cluster-state"] = ["existing"],
        ["client-cert-auth"] = ["true", "--trusted-ca-file=ca.pem"],
        ["peer-client-cert-auth"] = ["true", "--peer-trusted-ca-file=ca.pem"],
        ["auth-token"] = ["simple"], // replaced below: the JWT form needs key files
        ["bcrypt-cost"] = ["12"],
        ["metrics"] = ["extensive"],
        ["logger"] = ["capnslog"],
        ["log-outputs"] = ["stdout"],
        ["log-level"] = ["debug"],
        ["log-format"] = ["json"],
        ["auto-compaction-mode"] = ["revision"],
        ["auto-compaction-retention"] = ["1h"],
        ["cipher-suites"] = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
        ["tls-min-version"] = ["TLS1.3"],
        ["tls-max-version"] = ["TLS1.3", "--tls-min-version=TLS1.3"],
        ["feature-gates"] = ["InitialCorruptCheck=true"],
        ["discovery-fallback"] = ["exit"],
        ["v2-deprecation"] = ["write-only"],
        ["proxy"] = ["on"],
        ["backend-bbolt-freelist-type"] = ["array"],
        ["experimental-backend-bbolt-freelist-type"] = ["map"],
        ["client-cert-file"] = ["client.pem", "--client-key-file=client-key.pem"],
        ["client-key-file"] = ["client-key.pem", "--client-cert-file=client.pem"],
        ["peer-client-cert-file"] = ["peer-client.pem", "--peer-client-key-file=peer-client-key.pem"],
        ["peer-client-key-file"] = ["peer-client-key.pem", "--peer-client-cert-file=peer-client.pem"],
        ["client-cert-allowed-hostname"] = ["client.example", "--client-cert-auth=true", "--trusted-ca-file=ca.pem"],
    };

    private static readonly IDictionary NoEnvironment = new Hashtable();

    public static TheoryData<string> AllFlags()
    {
        var data = new TheoryData<string>();
        foreach (var name in Etcd34FromHelp().Concat(Etcd35).Concat(Etcd36).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
        {
            data.Add(name);
        }

        return data;
    }

    [Fact]
    public void Etcd_34_help_lists_the_flags_this_table_knows()
    {
        var fromHelp = Etcd34FromHelp();
        fromHelp.Should().HaveCountGreaterThan(70, "etcd 3.4's --help lists about 80 flags");
        fromHelp.Should().Contain(["name", "listen-client-urls", "experimental-initial-corrupt-check", "metrics"]);
    }

    [Theory]
    [MemberData(nameof(AllFlags))]
    public void Every_etcd_flag_is_parsed_and_either_works_or_fails_naming_itself_and_why(string name)
    {
        if (name is "config-file" or "version")
        {
            return; // handled by the parser itself (FlagParserTests)
        }

        var spec = FlagTable.Find(name);
        spec.Should().NotBeNull("--{0} is an etcd flag", name);

        // etcd's default is always accepted.
        var withDefault = () => Parse(DefaultArgs(spec!));
        withDefault.Should().NotThrow("--{0} with etcd's default", name);

        var args = SampleArgs(spec!);
        switch (spec!.Support)
        {
            case FlagSupport.Supported:
                var parsed = Parse(args);
                parsed.Warnings.Should().NotContain(w => w.Contains("--" + name, StringComparison.Ordinal));
                Snapshot(parsed).Should().NotBe(Snapshot(Parse([])), "--{0} {1} must change what the member does", name, string.Join(' ', args));
                break;
            case FlagSupport.NoEffect:
                Parse(args).Warnings.Should().ContainSingle(w => w.Contains("--" + name + "=", StringComparison.Ordinal) && w.Contains("no effect", StringComparison.Ordinal));
                break;
            default:
                var start = () => Parse(args);
                var message = start.Should().Throw<OptionsException>().Which.Message;
                message.Should().Contain("--" + name).And.Contain("not supported");
                message.Should().MatchRegex(@"not supported by kvstore yet: \S", "the error says why (--{0})", name);

                break;
        }
    }

    [Fact]
    public void Help_mentions_only_flags_that_take_effect()
    {
        var mentioned = FlagInHelp().Matches(Usage.Text).Select(m => m.Groups[1].Value).Distinct().ToList();
        mentioned.Should().NotBeEmpty();
        foreach (var name in mentioned.Where(n => n is not ("version" or "help" or "config-file")))
        {
            FlagTable.Find(name).Should().NotBeNull("--help mentions --{0}", name);
            FlagTable.Find(name)!.Support.Should().Be(FlagSupport.Supported, "--help mentions --{0} as something kvstore does", name);
        }
    }

    [Theory]
    [InlineData("InitialCorruptCheck=true,LeaseCheckpoint=true", true, true)]
    [InlineData("InitialCorruptCheck=false, TxnModeWriteWithSharedBuffer=false", false, false)]
    public void Feature_gates_set_the_same_options_as_the_experimental_flags(string gates, bool corruptCheck, bool leaseCheckpoint)
    {
        var options = Parse(["--feature-gates", gates]);
        options.InitialCorruptCheck.Should().Be(corruptCheck);
        options.LeaseCheckpointEnabled.Should().Be(leaseCheckpoint);
    }

    [Theory]
    [InlineData("CompactHashCheck=true", "CompactHashCheck=true is not supported")]
    [InlineData("NoSuchGate=true", "unrecognized feature gate: NoSuchGate")]
    [InlineData("InitialCorruptCheck", "missing bool value for InitialCorruptCheck")]
    [InlineData("InitialCorruptCheck=maybe", "invalid value of InitialCorruptCheck=maybe")]
    public void Feature_gates_kvstore_cannot_honour_stop_the_start(string gates, string expected)
    {
        var start = () => Parse(["--feature-gates", gates]);
        start.Should().Throw<OptionsException>().Which.Message.Should().Contain("feature-gates").And.Contain(expected);
    }

    private static ServerOptions Parse(IReadOnlyList<string> args) => FlagParser.Parse(args, NoEnvironment).Options;

    private static string[] DefaultArgs(FlagSpec spec) => spec.Name switch
    {
        "data-dir" => [],
        _ when spec.Kind == FlagKind.Bool => [$"--{spec.Name}={spec.Default}"],
        _ => [$"--{spec.Name}", spec.Default],
    };

    private static string[] SampleArgs(FlagSpec spec)
    {
        if (spec.Name == "auth-token")
        {
            return ["--auth-token=jwt,pub-key=pub.pem,priv-key=priv.pem,sign-method=RS256"];
        }

        if (Samples.TryGetValue(spec.Name, out var sample))
        {
            return [$"--{spec.Name}={sample[0]}", .. sample[1..]];
        }

        var value = spec.Kind switch
        {
            FlagKind.Bool => spec.Default == "true" ? "false" : "true",
            FlagKind.Int or FlagKind.Uint => "7",
            FlagKind.Duration => "7s",
            FlagKind.Urls => "http://127.0.0.1:12379",
            _ => "x",
        };
        return [$"--{spec.Name}={value}"];
    }

    /// <summary>Everything the parsed options say, to see whether a flag changed anything.</summary>
    private static string Snapshot(ServerOptions options)
    {
        options.Warnings.Clear();
        return JsonSerializer.Serialize(options);
    }

    /// <summary>The flags real etcd 3.4 lists in its --help (the test fails if etcd is not installed).</summary>
    private static List<string> Etcd34FromHelp()
    {
        var start = new ProcessStartInfo("/usr/bin/etcd", "--help") { RedirectStandardOutput = true, RedirectStandardError = true };
        using var etcd = Process.Start(start) ?? throw new InvalidOperationException("cannot start /usr/bin/etcd");
        var stderr = etcd.StandardError.ReadToEndAsync();
        var text = etcd.StandardOutput.ReadToEnd() + stderr.GetAwaiter().GetResult();
        etcd.WaitForExit();
        return HelpFlag().Matches(text).Select(m => m.Groups[1].Value).Distinct().ToList();
    }

    [GeneratedRegex(@"(?m)^\s+--([a-z0-9-]+)")]
    private static partial Regex HelpFlag();

    [GeneratedRegex(@"--([a-z][a-z0-9-]+)")]
    private static partial Regex FlagInHelp();
}
