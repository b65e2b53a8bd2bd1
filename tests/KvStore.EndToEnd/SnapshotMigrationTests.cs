using System.Text.Json;
using Xunit.Abstractions;
using static KvStore.EndToEnd.EtcdJson;

namespace KvStore.EndToEnd;

/// <summary>
/// Backups in etcd's format, both ways, with real etcd 3.4 and etcdctl 3.4: a KvStore snapshot restored by etcdctl
/// serves the same in etcd, an etcd snapshot restored by `kvstore snapshot restore` serves the same in KvStore (keys,
/// revisions, lease IDs, the compaction point, HashKV at the same revision, users, roles, permissions and auth
/// enabled with the same passwords), and both tools report the same status.
/// </summary>
public sealed class SnapshotMigrationTests(ITestOutputHelper output) : IDisposable
{
    private readonly List<ServerProcess> _servers = [];
    private readonly string _root = ServerProcess.CreateTempDir("kvstore-e2e-snapshot-");
    private readonly string _etcd = Tools.Require("etcd", "etcd-server");
    private readonly string _etcdctl = Tools.Require("etcdctl", "etcd-client");

    public void Dispose()
    {
        foreach (var server in _servers)
        {
            output.WriteLine($"--- {server.Executable} ({server.DataDir}):\n{server.LogText()}");
            server.Dispose();
        }

        ServerProcess.TryDelete(_root);
    }

    private ServerProcess Server(string executable, string? dataDir = null)
    {
        var server = new ServerProcess(dataDir ?? Path.Combine(_root, "data-" + _servers.Count), executable: executable);
        _servers.Add(server);
        return server;
    }

    /// <summary>History with overwrites, a delete, a lease with a key, a compaction and writes after it.</summary>
    private static async Task<(long CompactRevision, string LeaseId)> PopulateAsync(Etcdctl ctl)
    {
        await ctl.OkAsync("put /m/a 1");
        await ctl.OkAsync("put /m/b 2");
        await ctl.OkAsync("put /m/a 3");
        await ctl.OkAsync("del /m/b");
        var lease = (await ctl.OkAsync("lease grant 600")).Split(' ')[1];
        await ctl.OkAsync($"put /m/c 4 --lease={lease}");
        var compact = Revision(await ctl.JsonAsync("get /m/a"));
        await ctl.OkAsync($"compaction {compact}");
        for (var i = 0; i < 20; i++)
        {
            await ctl.OkAsync($"put /m/k{i % 7} v{i}");
        }

        return (compact, lease);
    }

    private const string Root = "root:rootpw";

    /// <summary>Users, roles and permissions, then auth enabled: every later call needs credentials.</summary>
    private static async Task PopulateAuthAsync(Etcdctl ctl)
    {
        foreach (var command in new[]
        {
            "user add root:rootpw", "role add root", "user grant-role root root",
            "user add alice:alicepw", "user add bob:bobpw", "role add app", "role add audit",
            "role grant-permission app readwrite /m/ --prefix", "role grant-permission app write /w",
            "role grant-permission audit read /m/a /m/c", "user grant-role alice app", "user grant-role bob audit",
            "auth enable",
        })
        {
            await ctl.OkAsync(command);
        }
    }

    /// <summary>The auth store as etcdctl shows it to root, and that it is enforced with the same passwords and rules.</summary>
    private static async Task<string> AuthStateAsync(ServerProcess server)
    {
        var root = new Etcdctl(server, Root);
        var lines = new List<string> { await root.OkAsync("user list"), await root.OkAsync("role list") };
        foreach (var name in new[] { "root", "alice", "bob" })
        {
            lines.Add(await root.OkAsync($"user get {name}"));
        }

        foreach (var name in new[] { "root", "app", "audit" })
        {
            lines.Add(await root.OkAsync($"role get {name}"));
        }

        var anonymous = await new Etcdctl(server).RunAsync("get /m/a");
        lines.Add($"anonymous get: exit {anonymous.ExitCode} {anonymous.Stderr.Contains("user name is empty", StringComparison.Ordinal)}");
        var alice = new Etcdctl(server, "alice:alicepw");
        lines.Add("alice get: " + await alice.OkAsync("get /m/a --print-value-only"));
        var bob = new Etcdctl(server, "bob:bobpw");
        lines.Add("bob get: " + await bob.OkAsync("get /m/a --print-value-only"));
        var denied = await bob.RunAsync("put /m/a x");
        lines.Add($"bob put: exit {denied.ExitCode} {denied.Stderr.Contains("permission denied", StringComparison.Ordinal)}");
        var wrong = await new Etcdctl(server, "alice:wrong").RunAsync("get /m/a");
        lines.Add($"wrong password: exit {wrong.ExitCode} {wrong.Stderr.Contains("authentication failed", StringComparison.Ordinal)}");
        return string.Join('\n', lines);
    }

    /// <summary>What must survive a migration, read through etcdctl.</summary>
    private static async Task<string> StateAsync(Etcdctl ctl, long compact)
    {
        var all = await ctl.JsonAsync("get /m/ --prefix");
        var rev = Revision(all);
        var hash = await ctl.JsonAsync($"endpoint hashkv --rev {rev}");
        var hashKv = hash[0].GetProperty("HashKV");
        var leases = (await ctl.OkAsync("lease list")).Trim();
        var atCompact = await ctl.JsonAsync($"get /m/ --prefix --rev {compact}");
        var beforeCompact = await ctl.RunAsync($"get /m/a --rev {compact - 1}");
        beforeCompact.Stderr.Should().Contain("required revision has been compacted");
        return string.Join('\n', [
            $"revision {rev}",
            $"hashkv {hashKv.GetProperty("hash").GetUInt32()} compact {hashKv.GetProperty("compact_revision").GetInt64()}",
            $"leases {leases}",
            .. Kvs(all).Select(kv => kv.GetRawText()),
            $"at compact revision {compact}:",
            .. Kvs(atCompact).Select(kv => kv.GetRawText()),
        ]);
    }

    private async Task<string> SaveSnapshotAsync(Etcdctl ctl, string name)
    {
        var file = Path.Combine(_root, name);
        (await ctl.OkAsync($"snapshot save {file}")).Should().Contain("Snapshot saved at");
        return file;
    }

    private async Task AssertSameStatusAsync(string file)
    {
        var env = new Dictionary<string, string> { ["ETCDCTL_API"] = "3" };
        foreach (var format in new[] { "json", "table" })
        {
            var etcd = await Tools.RunAsync(_etcdctl, ["snapshot", "status", file, "-w", format], env: env);
            var ours = await Tools.RunAsync(ServerProcess.KvStorePath, ["snapshot", "status", file, "-w", format]);
            etcd.ExitCode.Should().Be(0, etcd.ToString());
            ours.ExitCode.Should().Be(0, ours.ToString());
            ours.Stdout.Should().Be(etcd.Stdout);
        }
    }

    [Fact]
    public async Task KvStore_snapshot_restored_by_etcdctl_serves_the_same_in_etcd()
    {
        var source = Server(ServerProcess.KvStorePath);
        await source.StartAsync();
        var (compact, lease) = await PopulateAsync(new Etcdctl(source));
        await PopulateAuthAsync(new Etcdctl(source));
        var ctl = new Etcdctl(source, Root);
        var before = await StateAsync(ctl, compact);
        var authBefore = await AuthStateAsync(source);
        var file = await SaveSnapshotAsync(ctl, "kvstore.db");
        await AssertSameStatusAsync(file);

        var target = Server(_etcd);
        var restore = await Tools.RunAsync(_etcdctl, [
            "snapshot", "restore", file, "--data-dir", target.DataDir, "--name", target.Name,
            "--initial-cluster", $"{target.Name}={target.PeerUrl}", "--initial-advertise-peer-urls", target.PeerUrl,
        ], env: new Dictionary<string, string> { ["ETCDCTL_API"] = "3" });
        restore.ExitCode.Should().Be(0, restore.ToString());
        await target.StartAsync();

        var after = await StateAsync(new Etcdctl(target, Root), compact);
        after.Should().Be(before);
        before.Should().Contain(lease);
        (await AuthStateAsync(target)).Should().Be(authBefore);
        authBefore.Should().Contain("anonymous get: exit 1 True").And.Contain("bob put: exit 1 True").And.Contain("Role app").And.Contain("[/m/a, /m/c)");
    }

    [Fact]
    public async Task Etcd_snapshot_restored_by_kvstore_serves_the_same_and_keeps_working()
    {
        var source = Server(_etcd);
        await source.StartAsync();
        var (compact, lease) = await PopulateAsync(new Etcdctl(source));
        await PopulateAuthAsync(new Etcdctl(source));
        var ctl = new Etcdctl(source, Root);
        var before = await StateAsync(ctl, compact);
        var authBefore = await AuthStateAsync(source);
        var file = await SaveSnapshotAsync(ctl, "etcd.db");
        await AssertSameStatusAsync(file);

        var target = Server(ServerProcess.KvStorePath);
        var restore = await Tools.RunAsync(ServerProcess.KvStorePath, [
            "snapshot", "restore", file, "--data-dir", target.DataDir, "--name", target.Name,
            "--initial-cluster", $"{target.Name}={target.PeerUrl}", "--initial-advertise-peer-urls", target.PeerUrl,
        ]);
        restore.ExitCode.Should().Be(0, restore.ToString());
        restore.Stdout.Should().Contain("1 leases");
        await target.StartAsync();
        var targetCtl = new Etcdctl(target, Root);

        var after = await StateAsync(targetCtl, compact);
        after.Should().Be(before);
        before.Should().Contain(lease);
        (await AuthStateAsync(target)).Should().Be(authBefore);
        authBefore.Should().Contain("anonymous get: exit 1 True").And.Contain("bob put: exit 1 True").And.Contain("Role app").And.Contain("[/m/a, /m/c)");
        (await targetCtl.OkAsync($"lease timetolive {lease}")).Should().Contain("granted with TTL(600s)");

        // The restored member is a working cluster of its own: writes continue the revision sequence.
        var rev = Revision(await targetCtl.JsonAsync("get /m/a"));
        await targetCtl.OkAsync("put /m/new x");
        Revision(await targetCtl.JsonAsync("get /m/new")).Should().Be(rev + 1);
        (await targetCtl.OkAsync("member list")).Should().Contain(target.PeerUrl);
    }

    [Fact]
    public async Task Restore_refuses_bad_input_and_leaves_no_data_dir()
    {
        var source = Server(ServerProcess.KvStorePath);
        await source.StartAsync();
        var ctl = new Etcdctl(source);
        await ctl.OkAsync("put k v");
        var file = await SaveSnapshotAsync(ctl, "kvstore.db");
        var kvstore = ServerProcess.KvStorePath;

        var existing = Path.Combine(_root, "existing");
        Directory.CreateDirectory(existing);
        var r = await Tools.RunAsync(kvstore, ["snapshot", "restore", file, "--data-dir", existing]);
        (r.ExitCode, r.Stderr).Should().Be((1, $"Error: data-dir \"{existing}\" exists\n"));

        // A flipped byte fails the SHA-256 check; a truncated file has no trailer; neither leaves a data dir.
        var damaged = Path.Combine(_root, "damaged.db");
        var bytes = await File.ReadAllBytesAsync(file);
        bytes[bytes.Length / 2] ^= 0x40;
        await File.WriteAllBytesAsync(damaged, bytes);
        var dir = Path.Combine(_root, "restored");
        r = await Tools.RunAsync(kvstore, ["snapshot", "restore", damaged, "--data-dir", dir]);
        r.ExitCode.Should().Be(1);
        r.Stderr.Should().StartWith("Error: expected sha256 ");
        await File.WriteAllBytesAsync(damaged, bytes[..(bytes.Length - 100)]);
        r = await Tools.RunAsync(kvstore, ["snapshot", "restore", damaged, "--data-dir", dir]);
        (r.ExitCode, r.Stderr).Should().Be((1, "Error: snapshot missing hash but --skip-hash-check=false\n"));
        r = await Tools.RunAsync(kvstore, ["snapshot", "restore", damaged, "--data-dir", dir, "--skip-hash-check"]);
        r.ExitCode.Should().Be(1);
        r.Stderr.Should().Contain("is corrupt or not a bbolt database");
        Directory.Exists(dir).Should().BeFalse();
        Directory.Exists(dir + ".restore-tmp").Should().BeFalse();

        // What a crash in the middle leaves (a partial temporary dir) is not a data dir, and the next restore replaces it.
        Directory.CreateDirectory(Path.Combine(dir + ".restore-tmp", "member", "kv"));
        r = await Tools.RunAsync(kvstore, ["snapshot", "restore", file, "--data-dir", dir]);
        r.ExitCode.Should().Be(0, r.ToString());
        Directory.Exists(dir + ".restore-tmp").Should().BeFalse();
        Directory.Exists(Path.Combine(dir, "member", "wal")).Should().BeTrue();
    }
}
