using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// A 3-member cluster whose peers talk mutual TLS with certificates from deploy/certs/make-certs.sh, pinned to TLS 1.2
/// and one cipher suite, peer client certificates restricted by --peer-cert-allowed-hostname: it elects, replicates,
/// survives a leader kill; a member with a certificate from another CA cannot join and each peer logs the refusal.
/// </summary>
public sealed class PeerTlsClusterTests(ITestOutputHelper output) : IAsyncLifetime, IDisposable
{
    private readonly string _pki = ServerProcess.CreateTempDir("kvstore-e2e-peer-pki-");
    private readonly string _roguePki = ServerProcess.CreateTempDir("kvstore-e2e-rogue-pki-");
    private TestCluster? _cluster;
    private ClusterMember? _rogue;

    public Task InitializeAsync() => Task.CompletedTask;

    [Fact]
    public async Task Three_members_over_peer_mtls_replicate_survive_a_leader_kill_and_refuse_a_foreign_certificate()
    {
        await MakeCertsAsync(_pki, "m0=127.0.0.1", "m1=127.0.0.1", "m2=127.0.0.1");
        await MakeCertsAsync(_roguePki, "rogue=127.0.0.1");
        string[] tls =
        [
            "--peer-cert-file", Path.Combine(_pki, "{name}", "peer.crt"), "--peer-key-file", Path.Combine(_pki, "{name}", "peer.key"),
            "--peer-trusted-ca-file", Path.Combine(_pki, "ca.crt"), "--peer-client-cert-auth", "--peer-cert-allowed-hostname", "127.0.0.1",
            "--tls-min-version", "TLS1.2", "--tls-max-version", "TLS1.2", "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ];
        _cluster = await TestCluster.StartAsync(output, 3, tls, peerScheme: "https");
        var members = _cluster.Members;
        members.Should().OnlyContain(m => m.PeerUrl.StartsWith("https://", StringComparison.Ordinal));

        var leader = await _cluster.WaitLeaderAsync(members.ToList(), TestCluster.StartTimeout);
        var first = await _cluster.CtlPutAsync(members[0], "/tls/a", "1", TestCluster.RequestTimeout);
        first.Error.Should().BeNull();
        await _cluster.WaitConvergedAsync(members.ToList(), first.Revision, TestCluster.StartTimeout);
        members.Should().OnlyContain(m => !m.LogContains("does not accept the framed stream"), "the framed peer stream runs over peer TLS too");

        leader.Kill();
        var survivors = members.Where(m => m != leader).ToList();
        await _cluster.WaitLeaderAsync(survivors, TestCluster.StartTimeout);
        var second = await _cluster.CtlPutAsync(survivors[0], "/tls/b", "2", TestCluster.RequestTimeout);
        second.Error.Should().BeNull();
        var (kvs, _) = await _cluster.CtlGetAsync(survivors[1], "/tls/", prefix: true);
        kvs.Keys.Should().BeEquivalentTo("/tls/a", "/tls/b");

        // A member with a certificate from another CA asks the peers to join: every handshake is refused and logged.
        var ports = LoopbackPorts.Take(2);
        _rogue = new ClusterMember("rogue", "127.0.0.1", ports[0], ports[1], Path.Combine(_roguePki, "data"), null) { PeerScheme = "https" };
        _rogue.Start(
            _cluster.InitialCluster + $",rogue={_rogue.PeerUrl}",
            "existing",
            _cluster.Token,
            [
                "--peer-cert-file", Path.Combine(_roguePki, "rogue", "peer.crt"), "--peer-key-file", Path.Combine(_roguePki, "rogue", "peer.key"),
                "--peer-trusted-ca-file", Path.Combine(_pki, "ca.crt"), "--peer-client-cert-auth",
            ]);
        var exit = await _rogue.WaitExitAsync(TimeSpan.FromSeconds(60));
        exit.Should().NotBe(0, "a member the cluster does not trust cannot join:\n{0}", _rogue.LogTail(40));
        foreach (var m in survivors)
        {
            m.LogTail(400).Should().Contain("TLS handshake from 127.0.0.1:").And.Contain("on the peer port refused: client certificate CN=rogue, O=kvstore not accepted (PartialChain)");
        }
    }

    private static async Task MakeCertsAsync(string dir, params string[] members)
    {
        var r = await Tools.RunAsync(Tools.Require("bash", "bash"), [Path.Combine(ServerProcess.RepoRoot, "deploy", "certs", "make-certs.sh"), "-o", dir, .. members], timeout: TimeSpan.FromSeconds(120));
        r.ExitCode.Should().Be(0, r.ToString());
    }

    public void Dispose() => _rogue?.Dispose();

    public async Task DisposeAsync()
    {
        if (_rogue is not null)
        {
            output.WriteLine(_rogue.LogTail(60));
            _rogue.Dispose();
        }

        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }

        ServerProcess.TryDelete(_pki);
        ServerProcess.TryDelete(_roguePki);
    }
}
