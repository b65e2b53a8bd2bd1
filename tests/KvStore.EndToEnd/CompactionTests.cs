using Xunit.Abstractions;
using static KvStore.EndToEnd.EtcdJson;

namespace KvStore.EndToEnd;

/// <summary>Compaction through etcdctl, on a server of its own (compaction affects every key).</summary>
public sealed class CompactionTests(ServerFixture fixture, ITestOutputHelper output)
    : SharedServerTest(fixture, output), IClassFixture<ServerFixture>
{
    [Fact]
    public async Task Compaction_drops_old_revisions_and_reports_etcds_errors()
    {
        var k = Prefix + "c";
        await Ctl.OkAsync($"put {k} v1");
        var rev1 = Revision(await Ctl.JsonAsync($"get {k}"));
        await Ctl.OkAsync($"put {k} v2");
        await Ctl.OkAsync($"put {k} v3");
        var rev3 = rev1 + 2;

        (await Ctl.OkAsync($"get {k} --rev {rev1} --print-value-only")).Should().Be("v1\n");
        (await Ctl.OkAsync($"compaction {rev3}")).Should().Be($"compacted revision {rev3}\n");

        var old = await Ctl.RunAsync($"get {k} --rev {rev1}");
        old.ExitCode.Should().Be(1);
        old.Stderr.Should().Contain("Error: etcdserver: mvcc: required revision has been compacted");
        old.Stderr.Should().Contain("code = OutOfRange");

        // The compacted revision itself is still readable; later ones too.
        (await Ctl.OkAsync($"get {k} --rev {rev3} --print-value-only")).Should().Be("v3\n");
        (await Ctl.OkAsync($"get {k} --print-value-only")).Should().Be("v3\n");

        var again = await Ctl.RunAsync($"compaction {rev1}");
        again.ExitCode.Should().Be(1);
        again.Stderr.Should().Contain("Error: etcdserver: mvcc: required revision has been compacted");

        var future = await Ctl.RunAsync($"compaction {rev3 + 1000}");
        future.ExitCode.Should().Be(1);
        future.Stderr.Should().Contain("Error: etcdserver: mvcc: required revision is a future revision");
    }

    [Fact]
    public async Task Compaction_keeps_the_latest_version_of_every_key_and_revisions_continue()
    {
        var keys = Enumerable.Range(0, 5).Select(i => $"{Prefix}k{i}").ToList();
        foreach (var k in keys)
        {
            await Ctl.OkAsync($"put {k} old");
            await Ctl.OkAsync($"put {k} new");
        }

        await Ctl.OkAsync($"del {keys[0]}");
        var rev = Revision(await Ctl.JsonAsync($"get {keys[1]}"));
        await Ctl.OkAsync($"compaction {rev} --physical");

        Pairs(await Ctl.JsonAsync($"get {Prefix} --prefix")).Should().Equal(keys.Skip(1).Select(k => (k, "new")));
        await Ctl.OkAsync($"put {keys[0]} again");
        var kv = Kvs(await Ctl.JsonAsync($"get {keys[0]}")).Single();
        Num(kv, "mod_revision").Should().Be(rev + 1);
        Num(kv, "version").Should().Be(1, "a key deleted and put again starts a new generation");
    }
}
