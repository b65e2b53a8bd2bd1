using System.Text.Json;
using Xunit.Abstractions;
using static KvStore.EndToEnd.EtcdJson;

namespace KvStore.EndToEnd;

/// <summary>etcdctl 3.4 (ETCDCTL_API=3) against the real binary: KV, txn, status and membership.</summary>
public sealed class EtcdctlTests(ServerFixture fixture, ITestOutputHelper output)
    : SharedServerTest(fixture, output), IClassFixture<ServerFixture>
{
    [Fact]
    public async Task Put_get_delete_round_trip()
    {
        var k = Prefix + "k";
        (await Ctl.OkAsync($"put {k} hello")).Should().Be("OK\n");
        (await Ctl.OkAsync($"get {k}")).Should().Be($"{k}\nhello\n");
        (await Ctl.OkAsync($"get {k} --print-value-only")).Should().Be("hello\n");

        var get = await Ctl.JsonAsync($"get {k}");
        var kv = Kvs(get).Should().ContainSingle().Subject;
        Num(kv, "version").Should().Be(1);
        Num(kv, "create_revision").Should().Be(Num(kv, "mod_revision"));
        Num(kv, "mod_revision").Should().Be(Revision(get));

        (await Ctl.OkAsync($"put {k} world")).Should().Be("OK\n");
        var get2 = await Ctl.JsonAsync($"get {k}");
        var kv2 = Kvs(get2).Should().ContainSingle().Subject;
        Num(kv2, "version").Should().Be(2);
        Num(kv2, "create_revision").Should().Be(Num(kv, "create_revision"));
        Num(kv2, "mod_revision").Should().Be(Num(kv, "mod_revision") + 1);
        Str(kv2.GetProperty("value")).Should().Be("world");

        (await Ctl.OkAsync($"del {k}")).Should().Be("1\n");
        (await Ctl.OkAsync($"del {k}")).Should().Be("0\n");
        (await Ctl.OkAsync($"get {k}")).Should().BeEmpty();
        var after = await Ctl.JsonAsync($"get {k}");
        Kvs(after).Should().BeEmpty();
        Revision(after).Should().Be(Num(kv2, "mod_revision") + 1, "a delete is one write");
    }

    [Fact]
    public async Task Put_with_prev_kv_prints_the_previous_pair()
    {
        var k = Prefix + "p";
        await Ctl.OkAsync($"put {k} v1");
        (await Ctl.OkAsync($"put {k} v2 --prev-kv")).Should().Be($"OK\n{k}\nv1\n");
        (await Ctl.OkAsync($"del {k} --prev-kv")).Should().Be($"1\n{k}\nv2\n");
    }

    [Fact]
    public async Task Prefix_range_limit_sort_and_count()
    {
        foreach (var (key, val) in new[] { ("b", "2"), ("a", "1"), ("d", "4"), ("c", "3") })
        {
            await Ctl.OkAsync($"put {Prefix}{key} {val}");
        }

        await Ctl.OkAsync($"put {Prefix[..^1]}0 outside");

        Pairs(await Ctl.JsonAsync($"get {Prefix} --prefix")).Should().Equal(
            (Prefix + "a", "1"), (Prefix + "b", "2"), (Prefix + "c", "3"), (Prefix + "d", "4"));

        // [a, c): range_end is exclusive.
        Pairs(await Ctl.JsonAsync($"get {Prefix}a {Prefix}c")).Should().Equal((Prefix + "a", "1"), (Prefix + "b", "2"));

        var limited = await Ctl.JsonAsync($"get {Prefix} --prefix --limit 2");
        Pairs(limited).Should().Equal((Prefix + "a", "1"), (Prefix + "b", "2"));
        limited.GetProperty("more").GetBoolean().Should().BeTrue();
        Num(limited, "count").Should().Be(4);

        Pairs(await Ctl.JsonAsync($"get {Prefix} --prefix --sort-by=KEY --order=DESCEND")).Select(p => p.Key)
            .Should().Equal(Prefix + "d", Prefix + "c", Prefix + "b", Prefix + "a");
        Pairs(await Ctl.JsonAsync($"get {Prefix} --prefix --sort-by=MODIFY --order=ASCEND")).Select(p => p.Key)
            .Should().Equal(Prefix + "b", Prefix + "a", Prefix + "d", Prefix + "c");
        Pairs(await Ctl.JsonAsync($"get {Prefix} --prefix --sort-by=VALUE --order=DESCEND --limit 1")).Should()
            .Equal((Prefix + "d", "4"));

        (await Ctl.OkAsync($"get {Prefix} --prefix --keys-only")).Should()
            .Be($"{Prefix}a\n\n{Prefix}b\n\n{Prefix}c\n\n{Prefix}d\n\n");

        (await Ctl.OkAsync($"del {Prefix} --prefix")).Should().Be("4\n");
        Pairs(await Ctl.JsonAsync($"get {Prefix} --prefix")).Should().BeEmpty();
    }

    [Fact]
    public async Task Get_at_an_older_revision_sees_the_old_value()
    {
        var k = Prefix + "r";
        await Ctl.OkAsync($"put {k} one");
        var rev1 = Revision(await Ctl.JsonAsync($"get {k}"));
        await Ctl.OkAsync($"put {k} two");
        await Ctl.OkAsync($"del {k}");

        (await Ctl.OkAsync($"get {k} --rev {rev1} --print-value-only")).Should().Be("one\n");
        (await Ctl.OkAsync($"get {k} --rev {rev1 + 1} --print-value-only")).Should().Be("two\n");
        (await Ctl.OkAsync($"get {k} --rev {rev1 + 2}")).Should().BeEmpty();

        var future = await Ctl.RunAsync($"get {k} --rev {rev1 + 1_000_000}");
        future.ExitCode.Should().NotBe(0);
        future.Stderr.Should().Contain("Error: etcdserver: mvcc: required revision is a future revision");
        future.Stderr.Should().Contain("code = OutOfRange");
    }

    [Fact]
    public async Task Txn_from_stdin_takes_the_success_branch_and_writes_one_revision()
    {
        var a = Prefix + "a";
        await Ctl.OkAsync($"put {a} 1");
        var stdin = $"value(\"{a}\") = \"1\"\n\nput {Prefix}x X\nput {Prefix}y Y\n\nput {Prefix}z failed\n\n";
        (await Ctl.OkAsync("txn", stdin)).Should().Be("SUCCESS\n\nOK\n\nOK\n");

        var x = Kvs(await Ctl.JsonAsync($"get {Prefix}x")).Single();
        var y = Kvs(await Ctl.JsonAsync($"get {Prefix}y")).Single();
        Num(x, "mod_revision").Should().Be(Num(y, "mod_revision"), "one txn is one revision");
        Pairs(await Ctl.JsonAsync($"get {Prefix}z")).Should().BeEmpty();
    }

    [Fact]
    public async Task Txn_from_stdin_takes_the_failure_branch_and_reports_json()
    {
        var a = Prefix + "a";
        await Ctl.OkAsync($"put {a} 1");
        var before = Revision(await Ctl.JsonAsync($"get {a}"));
        var stdin = $"value(\"{a}\") = \"2\"\nmod(\"{a}\") > \"0\"\n\nput {Prefix}x no\n\nget {a}\nput {Prefix}f F\n\n";
        var txn = await Ctl.JsonAsync("txn", stdin);
        txn.TryGetProperty("succeeded", out var ok).Should().BeFalse("etcdctl omits succeeded=false");
        _ = ok;
        var responses = txn.GetProperty("responses").EnumerateArray().ToList();
        responses.Should().HaveCount(2);
        var range = responses[0].GetProperty("Response").GetProperty("ResponseRange");
        Pairs(range).Should().Equal((a, "1"));
        responses[1].GetProperty("Response").TryGetProperty("ResponsePut", out _).Should().BeTrue();
        Revision(txn).Should().Be(before + 1);

        Pairs(await Ctl.JsonAsync($"get {Prefix}x")).Should().BeEmpty();
        Pairs(await Ctl.JsonAsync($"get {Prefix}f")).Should().Equal((Prefix + "f", "F"));

        // A read-only txn does not bump the revision.
        var readOnly = await Ctl.JsonAsync("txn", $"\nget {a}\n\n\n");
        Revision(readOnly).Should().Be(before + 1);
    }

    [Fact]
    public async Task Endpoint_health_and_status_report_the_single_member()
    {
        var health = await Ctl.JsonAsync("endpoint health");
        var h = health.EnumerateArray().Should().ContainSingle().Subject;
        h.GetProperty("endpoint").GetString().Should().Be(Server.Endpoint);
        h.GetProperty("health").GetBoolean().Should().BeTrue();

        await Ctl.OkAsync($"put {Prefix}s v");
        var status = (await Ctl.JsonAsync("endpoint status")).EnumerateArray().Should().ContainSingle().Subject;
        status.GetProperty("Endpoint").GetString().Should().Be(Server.Endpoint);
        var s = status.GetProperty("Status");
        s.TryGetProperty("header", out var header).Should().BeTrue("status has a header: {0}", status);
        var memberId = header.TryGetProperty("member_id", out var mid) ? mid.GetUInt64() : 0UL;
        memberId.Should().NotBe(0UL);
        (s.TryGetProperty("leader", out var leader) ? leader.GetUInt64() : 0UL).Should().Be(memberId, "a single member leads itself: {0}", status);
        (header.TryGetProperty("cluster_id", out var cid) ? cid.GetUInt64() : 0UL).Should().NotBe(0UL, "{0}", status);
        Num(header, "revision").Should().BeGreaterThan(1, "{0}", status);
        Num(s, "raftIndex").Should().BeGreaterThan(0, "{0}", status);
        Num(s, "raftTerm").Should().BeGreaterThan(0, "{0}", status);
        Num(s, "dbSize").Should().BeGreaterThan(0, "{0}", status);
        (s.TryGetProperty("version", out var version) ? version.GetString() : null).Should().MatchRegex(@"^3\.[4-9]\.\d+$", "{0}", status);

        var table = await Ctl.OkAsync("endpoint status");
        table.Should().StartWith(Server.Endpoint + ", ");
        table.Should().Contain(", true, false, "); // is leader, is not a learner
    }

    [Fact]
    public async Task Member_list_shows_name_and_urls()
    {
        var list = await Ctl.JsonAsync("member list");
        var m = list.GetProperty("members").EnumerateArray().Should().ContainSingle().Subject;
        m.GetProperty("name").GetString().Should().Be(Server.Name);
        m.GetProperty("peerURLs").EnumerateArray().Select(u => u.GetString()).Should().Equal(Server.PeerUrl);
        m.GetProperty("clientURLs").EnumerateArray().Select(u => u.GetString()).Should().Equal(Server.ClientUrl);
        m.GetProperty("ID").GetUInt64().Should().Be(list.GetProperty("header").GetProperty("member_id").GetUInt64());

        var simple = await Ctl.OkAsync("member list");
        simple.Should().MatchRegex($"^[0-9a-f]+, started, {Server.Name}, {Server.PeerUrl}, {Server.ClientUrl}, false\n$");
    }

    [Fact]
    public async Task Lease_grant_put_timetolive_and_revoke()
    {
        var granted = await Ctl.OkAsync("lease grant 600");
        var m = System.Text.RegularExpressions.Regex.Match(granted, "^lease ([0-9a-f]+) granted with TTL\\(600s\\)\n$");
        m.Success.Should().BeTrue("etcdctl prints the lease: {0}", granted);
        var id = m.Groups[1].Value;

        (await Ctl.OkAsync($"put {Prefix}leased v --lease={id}")).Should().Be("OK\n");
        var kv = Kvs(await Ctl.JsonAsync($"get {Prefix}leased")).Single();
        Num(kv, "lease").Should().Be(Convert.ToInt64(id, 16));

        (await Ctl.OkAsync($"lease timetolive {id} --keys")).Should().MatchRegex(
            $"^lease {id} granted with TTL\\(600s\\), remaining\\(([1-5][0-9][0-9]|600)s\\), attached keys\\(\\[{System.Text.RegularExpressions.Regex.Escape(Prefix)}leased\\]\\)\n$");
        (await Ctl.OkAsync("lease list")).Should().Contain(id);

        (await Ctl.OkAsync($"lease revoke {id}")).Should().Be($"lease {id} revoked\n");
        (await Ctl.OkAsync($"get {Prefix}leased")).Should().BeEmpty("revoking a lease deletes its keys");

        var gone = await Ctl.RunAsync($"put {Prefix}again v --lease={id}");
        gone.ExitCode.Should().NotBe(0);
        gone.Stderr.Should().Contain("Error: etcdserver: requested lease not found");
    }

    [Fact]
    public async Task Lease_grant_below_the_minimum_ttl_is_raised_to_it()
    {
        // The minimum is ceil(1.5 × election timeout) = 2 s with etcd's default timing (100 ms heartbeat, 1000 ms election).
        foreach (var requested in new[] { 0, 1 })
        {
            var granted = await Ctl.OkAsync($"lease grant {requested}");
            granted.Should().MatchRegex("^lease [0-9a-f]+ granted with TTL\\(2s\\)\n$", "a grant of {0} s", requested);
        }
    }

    [Fact]
    public async Task Http_health_and_version_answer_like_etcd()
    {
        using var http = Tools.HttpClient(null);
        var health = await http.GetStringAsync(new Uri(Server.ClientUrl + "/health"));
        using (var doc = JsonDocument.Parse(health))
        {
            doc.RootElement.GetProperty("health").GetString().Should().Be("true");
        }

        foreach (var query in new[] { "?serializable=true", "?exclude=NOSPACE", "?exclude=NOSPACE&exclude=CORRUPT&serializable=true" })
        {
            using var response = await http.GetAsync(new Uri(Server.ClientUrl + "/health" + query));
            response.StatusCode.Should().Be(System.Net.HttpStatusCode.OK, "/health{0}", query);
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            doc.RootElement.GetProperty("health").GetString().Should().Be("true", "/health{0}", query);
        }

        var version = await http.GetStringAsync(new Uri(Server.ClientUrl + "/version"));
        using (var doc = JsonDocument.Parse(version))
        {
            doc.RootElement.GetProperty("etcdserver").GetString().Should().MatchRegex(@"^3\.[4-9]\.\d+$");
            doc.RootElement.GetProperty("etcdcluster").GetString().Should().MatchRegex(@"^3\.[4-9]\.0$");
        }
    }
}
