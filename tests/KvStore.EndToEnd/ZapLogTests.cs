using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;
using static KvStore.EndToEnd.EtcdJson;

namespace KvStore.EndToEnd;

/// <summary>
/// <c>--logger zap --log-outputs stderr</c> (etcd 3.5's defaults): every line the member writes is a JSON object with
/// zap's level, ts and msg, and the events operators' pipelines look for carry etcd's messages and field names (member
/// IDs in hex as etcd prints them). The assertions hold for real etcd 3.4 too (KVSTORE_E2E_SERVER=etcd), except the
/// raft term field, which etcd writes only inside its message.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed partial class ZapLogTests(ITestOutputHelper output)
{
    private const long QuotaBytes = 8L << 20;

    [Fact]
    public async Task Zap_lines_carry_etcds_messages_and_fields_for_start_election_publish_compaction_defrag_alarm_and_membership()
    {
        using var server = new ServerProcess(extraArgs: ["--logger", "zap", "--log-outputs", "stderr", "--quota-backend-bytes", QuotaBytes.ToString(CultureInfo.InvariantCulture)]);
        // etcd 3.4 warns about a group-readable data dir in a text line of its own, outside zap.
        File.SetUnixFileMode(server.DataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        await server.StartAsync();
        var ctl = new Etcdctl(server);
        var members = await ctl.JsonAsync("member list");
        var memberId = members.GetProperty("header").GetProperty("member_id").GetUInt64().ToString("x", CultureInfo.InvariantCulture);
        var clusterId = members.GetProperty("header").GetProperty("cluster_id").GetUInt64().ToString("x", CultureInfo.InvariantCulture);

        // Writes, a compaction and a defragmentation.
        await ctl.OkAsync("put /zap/a 1");
        var compactAt = Revision(await ctl.JsonAsync("put /zap/a 2"));
        await ctl.OkAsync($"compaction {compactAt}");
        await ctl.OkAsync("defrag");

        // The NOSPACE alarm: 900 KB values until the 8 MiB quota refuses one, then disarm.
        var big = new string('x', 900 * 1024);
        var refused = false;
        for (var i = 0; i < 30 && !refused; i++)
        {
            refused = (await ctl.RunAsync("put /zap/big", big)).Stderr.Contains("database space exceeded", StringComparison.Ordinal);
        }

        refused.Should().BeTrue("an 8 MiB quota cannot hold 30 values of 900 KB");
        await ctl.OkAsync("alarm disarm");

        // A learner does not change the quorum, so the single member keeps serving.
        var learnerUrl = $"http://127.0.0.1:{LoopbackPorts.TakeOne()}";
        await ctl.OkAsync($"member add zap-learner --peer-urls={learnerUrl} --learner");
        var learnerId = (await ctl.JsonAsync("member list")).GetProperty("members").EnumerateArray()
            .Single(m => m.GetProperty("peerURLs")[0].GetString() == learnerUrl).GetProperty("ID").GetUInt64().ToString("x", CultureInfo.InvariantCulture);

        var lines = await WaitForLinesAsync(server, ["finished scheduled compaction", "alarm disarmed", "added member"], learnerId);
        output.WriteLine(string.Join('\n', lines.Select(l => l.GetRawText())));

        // Start: the settings, then the member it runs as.
        var starting = One(lines, "starting an etcd server");
        starting.GetProperty("name").GetString().Should().Be(server.Name);
        starting.GetProperty("data-dir").GetString().Should().NotBeNullOrEmpty();
        starting.GetProperty("listen-client-urls").EnumerateArray().Select(u => u.GetString()).Should().Equal(server.ClientUrl);
        starting.GetProperty("initial-cluster").GetString().Should().Be($"{server.Name}={server.PeerUrl}");
        starting.GetProperty("quota-backend-bytes").GetInt64().Should().Be(QuotaBytes);
        var local = One(lines, "starting local member");
        local.GetProperty("local-member-id").GetString().Should().Be(memberId);
        local.GetProperty("cluster-id").GetString().Should().Be(clusterId);

        // Election: raft's line and raft.node's line, with the term.
        var becameLeader = Matching(lines, LeaderAtTerm()).Should().ContainSingle().Subject;
        var term = ulong.Parse(LeaderAtTerm().Match(becameLeader.GetProperty("msg").GetString()!).Groups["term"].Value, CultureInfo.InvariantCulture);
        becameLeader.GetProperty("msg").GetString().Should().Be($"{memberId} became leader at term {term}");
        var elected = One(lines, $"raft.node: {memberId} elected leader {memberId} at term {term}");
        if (!ServerProcess.IsRealEtcd)
        {
            becameLeader.GetProperty("term").GetUInt64().Should().Be(term);
            elected.GetProperty("term").GetUInt64().Should().Be(term);
        }

        // Membership: the initial member, then the learner.
        var added = lines.Where(l => Msg(l) == "added member").ToList();
        added.Should().HaveCount(2);
        foreach (var line in added)
        {
            line.GetProperty("cluster-id").GetString().Should().Be(clusterId);
            line.GetProperty("local-member-id").GetString().Should().Be(memberId);
        }

        added[0].GetProperty("added-peer-id").GetString().Should().Be(memberId);
        added[0].GetProperty("added-peer-peer-urls").EnumerateArray().Select(u => u.GetString()).Should().Equal(server.PeerUrl);
        added[1].GetProperty("added-peer-id").GetString().Should().Be(learnerId);
        added[1].GetProperty("added-peer-peer-urls").EnumerateArray().Select(u => u.GetString()).Should().Equal(learnerUrl);

        var published = One(lines, "published local member to cluster through raft");
        published.GetProperty("local-member-id").GetString().Should().Be(memberId);
        published.GetProperty("cluster-id").GetString().Should().Be(clusterId);
        published.GetProperty("local-member-attributes").GetString().Should().Be($"{{Name:{server.Name} ClientURLs:[{server.ClientUrl}]}}");
        One(lines, "serving client traffic insecurely; this is strongly discouraged!").GetProperty("address").GetString().Should().Be(server.Endpoint);

        // Compaction and defragmentation.
        One(lines, "compact tree index").GetProperty("revision").GetInt64().Should().Be(compactAt);
        var compacted = One(lines, "finished scheduled compaction");
        compacted.GetProperty("compact-revision").GetInt64().Should().Be(compactAt);
        compacted.GetProperty("took").GetString().Should().MatchRegex(@"^[0-9.]+(µs|ms|s)$");
        One(lines, "starting defragment");
        One(lines, "defragmenting").GetProperty("current-db-size-bytes").GetInt64().Should().BePositive();
        var defragmented = One(lines, "defragmented");
        defragmented.GetProperty("current-db-size-in-use-bytes").GetInt64().Should().BePositive();
        defragmented.GetProperty("current-db-size").GetString().Should().MatchRegex(@"^[0-9.]+ [kMG]?B$");
        One(lines, "finished defragment");
        lines.SelectMany(l => l.EnumerateObject().Select(p => p.Name)).Should()
            .NotContain(["request-id", "request-path", "connection-id"], "etcd's lines carry no fields of the HTTP request they were logged in");

        // Alarms: a warning when raised, one when disarmed, naming the member that raised it.
        foreach (var message in new[] { "alarm raised", "alarm disarmed" })
        {
            var alarm = One(lines, message);
            alarm.GetProperty("level").GetString().Should().Be("warn");
            alarm.GetProperty("alarm").GetString().Should().Be("NOSPACE");
            alarm.GetProperty("from").GetString().Should().Be(memberId);
        }
    }

    [GeneratedRegex(@"^[0-9a-f]+ became leader at term (?<term>[0-9]+)$")]
    private static partial Regex LeaderAtTerm();

    private static string? Msg(JsonElement line) => line.GetProperty("msg").GetString();

    private static JsonElement One(IReadOnlyList<JsonElement> lines, string message) =>
        lines.Where(l => Msg(l) == message).Should().ContainSingle("one \"{0}\" line", message).Subject;

    private static IEnumerable<JsonElement> Matching(IReadOnlyList<JsonElement> lines, Regex message) =>
        lines.Where(l => message.IsMatch(Msg(l) ?? string.Empty));

    /// <summary>
    /// The member's lines, each checked to be one zap JSON object on stderr, once the expected messages (and the
    /// learner's "added member") are there; fails after a bounded wait.
    /// </summary>
    private static async Task<IReadOnlyList<JsonElement>> WaitForLinesAsync(ServerProcess server, string[] messages, string learnerId)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var lines = Parse(server.LogLines());
            var complete = messages.All(m => lines.Any(l => Msg(l) == m))
                && lines.Any(l => Msg(l) == "added member" && l.GetProperty("added-peer-id").GetString() == learnerId);
            if (complete || DateTime.UtcNow > deadline)
            {
                return lines;
            }

            await Task.Delay(100);
        }
    }

    private static List<JsonElement> Parse(IReadOnlyList<string> raw)
    {
        var lines = new List<JsonElement>();
        foreach (var line in raw.Where(l => !l.StartsWith("###", StringComparison.Ordinal)))
        {
            line.Should().StartWith("2> ", "--log-outputs stderr writes every line to stderr");
            JsonElement json;
            try
            {
                using var doc = JsonDocument.Parse(line[3..]);
                json = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new InvalidOperationException($"not a JSON line: {line}", e);
            }

            json.ValueKind.Should().Be(JsonValueKind.Object);
            json.GetProperty("level").GetString().Should().BeOneOf("debug", "info", "warn", "error", "fatal");
            json.GetProperty("ts").GetString().Should().MatchRegex(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$");
            json.GetProperty("msg").GetString().Should().NotBeNullOrEmpty();
            lines.Add(json);
        }

        return lines;
    }
}
