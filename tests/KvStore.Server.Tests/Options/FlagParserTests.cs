using System.Collections;
using KvStore.Server.Identity;
using KvStore.Server.Options;

namespace KvStore.Server.Tests.Options;

/// <summary>etcd's command line: Go flag syntax, ETCD_* variables, defaults, unsupported and unknown flags.</summary>
public sealed class FlagParserTests
{
    private static readonly IDictionary NoEnvironment = new Hashtable();

    [Fact]
    public void Defaults_are_etcds()
    {
        var options = Parse();
        options.Name.Should().Be("default");
        options.EffectiveDataDir.Should().Be("default.etcd");
        options.ListenClientUrls.Select(u => u.ToString()).Should().Equal("http://localhost:2379/");
        options.AdvertiseClientUrls.Select(u => u.ToString()).Should().Equal("http://localhost:2379/");
        options.ListenPeerUrls.Select(u => u.ToString()).Should().Equal("http://localhost:2380/");
        options.InitialCluster.Should().Be("default=http://localhost:2380");
        options.InitialClusterState.Should().Be("new");
        options.InitialClusterToken.Should().Be("etcd-cluster");
        options.HeartbeatIntervalMs.Should().Be(100);
        options.ElectionTimeoutMs.Should().Be(1000);
        options.SnapshotCount.Should().Be(100_000UL);
        options.EffectiveQuotaBytes.Should().Be(2L * 1024 * 1024 * 1024);
        options.MaxRequestBytes.Should().Be(1_572_864);
        options.GrpcMaxReceiveBytes.Should().Be(1_572_864 + (512 * 1024));
        options.MaxTxnOps.Should().Be(128);
        options.Logger.Should().Be("zap");
        options.LogLevel.Should().Be("info");
        options.LogOutputs.Should().Equal("default");
        options.LogFormat.Should().Be("text");
    }

    [Theory]
    [InlineData("--name=x")]
    [InlineData("-name=x")]
    [InlineData("--name", "x")]
    [InlineData("-name", "x")]
    public void Go_flag_syntax_variants(params string[] args)
    {
        var options = Parse(args.Concat(["--initial-cluster", "x=http://localhost:2380"]).ToArray());
        options.Name.Should().Be("x");
        options.EffectiveDataDir.Should().Be("x.etcd");
    }

    [Theory]
    [InlineData(new[] { "--client-cert-auth", "--trusted-ca-file=ca.pem" }, true)]
    [InlineData(new[] { "--client-cert-auth=true", "--trusted-ca-file=ca.pem" }, true)]
    [InlineData(new[] { "--client-cert-auth=false" }, false)]
    [InlineData(new[] { "-client-cert-auth=0" }, false)]
    public void Booleans_take_no_separate_value(string[] args, bool expected) =>
        Parse(args).ClientTls.ClientCertAuth.Should().Be(expected);

    [Fact]
    public void Lease_checkpoint_and_watch_progress_flags_are_honoured_under_every_etcd_name()
    {
        var defaults = Parse();
        defaults.LeaseCheckpointEnabled.Should().BeFalse();
        defaults.LeaseCheckpointInterval.Should().Be(TimeSpan.FromMinutes(5));
        defaults.WatchProgressNotifyInterval.Should().Be(TimeSpan.FromMinutes(10));

        var set = Parse("--experimental-enable-lease-checkpoint", "--experimental-lease-checkpoint-interval=2s", "--watch-progress-notify-interval=1s");
        set.LeaseCheckpointEnabled.Should().BeTrue();
        set.LeaseCheckpointInterval.Should().Be(TimeSpan.FromSeconds(2));
        set.WatchProgressNotifyInterval.Should().Be(TimeSpan.FromSeconds(1));
        Parse("--experimental-watch-progress-notify-interval=250ms").WatchProgressNotifyInterval.Should().Be(TimeSpan.FromMilliseconds(250));
    }

    [Fact]
    public void A_boolean_followed_by_a_word_leaves_a_positional_argument()
    {
        var act = () => Parse("--client-cert-auth", "false");
        act.Should().Throw<OptionsException>().WithMessage("*'false' is not a valid flag*").Which.ExitCode.Should().Be(1);
    }

    [Fact]
    public void Environment_variables_set_flags()
    {
        var options = FlagParser.Parse([], Env(("ETCD_DATA_DIR", "/tmp/d"), ("ETCD_MAX_TXN_OPS", "3"), ("ETCD_SNAPSHOT_COUNT", "10"))).Options;
        options.EffectiveDataDir.Should().Be("/tmp/d");
        options.MaxTxnOps.Should().Be(3);
        options.SnapshotCount.Should().Be(10UL);
    }

    [Fact]
    public void A_flag_and_its_variable_together_is_an_error_as_in_etcd()
    {
        var act = () => FlagParser.Parse(["--data-dir=/a"], Env(("ETCD_DATA_DIR", "/b")));
        act.Should().Throw<OptionsException>().WithMessage("conflicting environment variable \"ETCD_DATA_DIR\" is shadowed*");
    }

    [Fact]
    public void Unknown_variables_are_warnings()
    {
        var options = FlagParser.Parse([], Env(("ETCD_FOOBAR", "1"))).Options;
        options.Warnings.Should().ContainSingle().Which.Should().Contain("ETCD_FOOBAR");
    }

    [Fact]
    public void Unknown_flags_get_gos_message_and_exit_code_2()
    {
        var act = () => Parse("--bogus-flag");
        act.Should().Throw<OptionsException>().WithMessage("flag provided but not defined: -bogus-flag").Which.ExitCode.Should().Be(2);
    }

    [Fact]
    public void A_missing_value_is_a_syntax_error()
    {
        var act = () => Parse("--name");
        act.Should().Throw<OptionsException>().WithMessage("flag needs an argument: -name").Which.ExitCode.Should().Be(2);
    }

    [Theory]
    [InlineData("--snapshot-count=abc", "invalid value \"abc\" for -snapshot-count: parse error")]
    [InlineData("--client-cert-auth=x", "invalid boolean value \"x\" for -client-cert-auth: parse error")]
    public void Bad_values_name_the_flag(string arg, string message)
    {
        var act = () => Parse(arg);
        act.Should().Throw<OptionsException>().WithMessage(message).Which.ExitCode.Should().Be(2);
    }

    [Theory]
    [InlineData("--socket-reuse-port")]
    [InlineData("--enable-v2=true")]
    [InlineData("--discovery=https://discovery.etcd.io/x")]
    public void Unsupported_flags_fail_naming_the_flag(string arg)
    {
        var name = arg.TrimStart('-').Split('=')[0];
        var act = () => Parse(arg);
        act.Should().Throw<OptionsException>().WithMessage($"flag --{name} is not supported*").Which.ExitCode.Should().Be(1);
    }

    [Theory]
    [InlineData("--enable-v2=false")]
    [InlineData("--auth-token=simple")]
    [InlineData("--proxy=off")]
    public void Unsupported_flags_with_etcds_default_are_accepted(string arg) => Parse(arg).Should().NotBeNull();

    [Theory]
    [InlineData("--experimental-corrupt-check-time=5m", 300)]
    [InlineData("--experimental-corrupt-check-time=1m30s", 90)]
    [InlineData("--experimental-corrupt-check-time=0", 0)]
    public void Corrupt_check_time_parses_as_a_go_duration(string arg, int seconds) =>
        Parse(arg).CorruptCheckTime.Should().Be(TimeSpan.FromSeconds(seconds));

    [Fact]
    public void Initial_corrupt_check_is_a_bool() =>
        Parse("--experimental-initial-corrupt-check").InitialCorruptCheck.Should().BeTrue();

    [Fact]
    public void A_negative_corrupt_check_time_is_refused() =>
        FluentActions.Invoking(() => Parse("--experimental-corrupt-check-time=-1s")).Should().Throw<OptionsException>()
            .WithMessage("error verifying flags, --experimental-corrupt-check-time must not be negative");

    [Theory]
    [InlineData(new string[0], true)]
    [InlineData(new[] { "--initial-election-tick-advance=false" }, false)]
    [InlineData(new[] { "--initial-election-tick-advance" }, true)]
    public void Initial_election_tick_advance_is_on_by_default_and_takes_effect_without_a_warning(string[] args, bool expected)
    {
        var options = Parse(args);
        options.InitialElectionTickAdvance.Should().Be(expected);
        options.Warnings.Should().BeEmpty();
    }

    [Fact]
    public void No_effect_flags_are_accepted_with_a_warning()
    {
        var options = Parse("--max-wals=10");
        options.Warnings.Should().ContainSingle().Which.Should().Contain("--max-wals");
    }

    [Fact]
    public void Help_and_version_short_circuit()
    {
        FlagParser.Parse(["--version"], NoEnvironment).ShowVersion.Should().BeTrue();
        FlagParser.Parse(["-h"], NoEnvironment).ShowHelp.Should().BeTrue();
    }

    [Fact]
    public void A_named_member_without_initial_cluster_bootstraps_from_its_advertised_peer_urls()
    {
        var options = Parse("--name=m0", "--initial-advertise-peer-urls=http://127.0.0.1:12380");
        options.InitialCluster.Should().Be("m0=http://127.0.0.1:12380");
    }

    [Fact]
    public void The_conformance_harness_command_line_parses()
    {
        var options = Parse(
            "--name", "m0", "--data-dir", "/tmp/x/m0.data",
            "--listen-client-urls", "http://127.0.0.1:27100", "--advertise-client-urls", "http://127.0.0.1:27100",
            "--listen-peer-urls", "http://127.0.0.1:27101", "--initial-advertise-peer-urls", "http://127.0.0.1:27101",
            "--initial-cluster", "m0=http://127.0.0.1:27101", "--initial-cluster-token", "tok-1", "--initial-cluster-state", "new",
            "--max-request-bytes=4096");
        options.MaxRequestBytes.Should().Be(4096);
        options.ListenClientUrls.Single().Port.Should().Be(27100);
    }

    [Fact]
    public void A_yaml_config_file_replaces_flags_and_environment()
    {
        var path = Path.Combine(Path.GetTempPath(), "kvstore-config-" + Guid.NewGuid().ToString("N") + ".yml");
        File.WriteAllText(path, """
            # etcd-style configuration
            name: 'c1'
            data-dir: /var/lib/c1
            listen-client-urls: http://127.0.0.1:2379
            initial-cluster: c1=http://localhost:2380
            max-txn-ops: 64
            log-outputs: [stderr]
            client-transport-security:
              client-cert-auth: false
              trusted-ca-file: ""
            """);
        try
        {
            var options = FlagParser.Parse(["--config-file", path], Env(("ETCD_NAME", "ignored"))).Options;
            options.Name.Should().Be("c1");
            options.EffectiveDataDir.Should().Be("/var/lib/c1");
            options.MaxTxnOps.Should().Be(64);
            options.LogOutputs.Should().Equal("stderr");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Member_and_cluster_ids_match_etcds()
    {
        // Reference values from etcd 3.4: --name m0 --initial-cluster m0=http://127.0.0.1:32480 --initial-cluster-token tok.
        var options = Parse(
            "--name=m0", "--initial-cluster=m0=http://127.0.0.1:32480", "--initial-advertise-peer-urls=http://127.0.0.1:32480",
            "--initial-cluster-token=tok");
        var identity = MemberIdentity.FromOptions(options);
        identity.MemberId.Should().Be(4752967736919646943UL);
        identity.ClusterId.Should().Be(1422246054719859875UL);
    }

    private static ServerOptions Parse(params string[] args) => FlagParser.Parse(args, NoEnvironment).Options;

    private static Hashtable Env(params (string Key, string Value)[] variables)
    {
        var table = new Hashtable();
        foreach (var (key, value) in variables)
        {
            table[key] = value;
        }

        return table;
    }
}
