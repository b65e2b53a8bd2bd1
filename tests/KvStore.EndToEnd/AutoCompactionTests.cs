using System.Diagnostics;
using Xunit.Abstractions;
using static KvStore.EndToEnd.EtcdJson;

namespace KvStore.EndToEnd;

/// <summary>--auto-compaction-mode/--auto-compaction-retention on a real process, observed through etcdctl.</summary>
public sealed class AutoCompactionTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Periodic_mode_compacts_history_older_than_the_retention()
    {
        using var server = new ServerProcess(extraArgs: ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"]);
        try
        {
            await server.StartAsync();
            var ctl = new Etcdctl(server);
            await ctl.OkAsync("put k v1");
            var first = Revision(await ctl.JsonAsync("get k"));
            await ctl.OkAsync("put k v2");

            // The compactor samples the revision every 200 ms and compacts at the one of 2 s ago: within a few seconds
            // the compaction point passes the first write.
            var sw = Stopwatch.StartNew();
            long compacted = 0;
            while (sw.Elapsed < TimeSpan.FromSeconds(30) && compacted < first)
            {
                var hash = await ctl.JsonAsync("endpoint hashkv");
                compacted = hash[0].GetProperty("HashKV").TryGetProperty("compact_revision", out var c) ? c.GetInt64() : 0;
                await Task.Delay(200);
            }

            compacted.Should().BeGreaterThanOrEqualTo(first, "auto-compaction ran within 30 s");
            var old = await ctl.RunAsync($"get k --rev {first - 1}");
            old.Stderr.Should().Contain("required revision has been compacted");
            (await ctl.OkAsync("get k --print-value-only")).Should().Be("v2\n");
            server.LogText().Should().Contain("completed auto periodic compaction");
        }
        finally
        {
            output.WriteLine(server.LogText());
        }
    }

    [Fact]
    public async Task Bad_retention_fails_the_start_with_etcds_message()
    {
        using var server = new ServerProcess(extraArgs: ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "xyz"]);
        server.StartProcess();
        (await server.WaitExitAsync(TimeSpan.FromSeconds(30))).Should().NotBe(0);
        server.LogText().Should().Contain("error parsing CompactionRetention: time: invalid duration \"xyz\"");
    }
}
