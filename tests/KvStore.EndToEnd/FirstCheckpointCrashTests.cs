using dotnet_etcd;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// A crash during the store's first checkpoint (the first --snapshot-count snapshot, or the first graceful stop) can
/// leave a log checkpoint directory whose metadata never reached the disk. Until that checkpoint completes the WAL is
/// never truncated, so the member must start, replaying every write from the WAL, instead of refusing to open.
/// </summary>
public sealed class FirstCheckpointCrashTests(ITestOutputHelper output) : IDisposable
{
    private const int Keys = 30;
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(20);

    private readonly ServerProcess _server = new();

    [Fact]
    public async Task A_checkpoint_that_never_finished_before_the_first_snapshot_is_dropped_and_the_wal_replays()
    {
        await _server.StartAsync();
        using (var client = new EtcdClient(_server.ClientUrl))
        {
            for (var i = 0; i < Keys; i++)
            {
                await client.PutAsync($"/first/{i:D3}", $"value-{i}", deadline: DateTime.UtcNow + CallTimeout);
            }
        }

        // SIGKILL: no checkpoint was taken (the first comes after --snapshot-count entries or at a graceful stop).
        _server.Kill();
        var checkpoints = Path.Combine(_server.DataDir, "member", "kv", "checkpoints");
        var unfinished = Path.Combine(checkpoints, "cpr-checkpoints", Guid.NewGuid().ToString());
        Directory.CreateDirectory(unfinished);
        await File.WriteAllBytesAsync(Path.Combine(unfinished, "info.dat.0"), []); // created, its write lost
        var logBefore = _server.LogLineCount;

        await _server.StartAsync("existing");
        using var reopened = new EtcdClient(_server.ClientUrl);
        var all = await reopened.GetRangeAsync("/first/", deadline: DateTime.UtcNow + CallTimeout);
        all.Kvs.Select(kv => (kv.Key.ToStringUtf8(), kv.Value.ToStringUtf8())).Should().Equal(
            Enumerable.Range(0, Keys).Select(i => ($"/first/{i:D3}", $"value-{i}")), "every acknowledged write is replayed from the WAL");
        all.Header.Revision.Should().Be(Keys + 1);
        Directory.Exists(unfinished).Should().BeFalse("the unfinished checkpoint is dropped");
        var log = _server.LogSince(logBefore);
        output.WriteLine(log);
        log.Should().Contain("never finished");

        // And the store checkpoints and reopens normally afterwards (graceful stop = a checkpoint, then a restart).
        (await _server.TerminateAsync(TimeSpan.FromSeconds(30))).Should().Be(0);
        await _server.StartAsync("existing");
        using var again = new EtcdClient(_server.ClientUrl);
        (await again.GetRangeAsync("/first/", deadline: DateTime.UtcNow + CallTimeout)).Kvs.Should().HaveCount(Keys);
    }

    [Fact]
    public async Task After_a_finished_checkpoint_unreadable_checkpoint_metadata_stops_the_start_naming_the_file()
    {
        await _server.StartAsync();
        using (var client = new EtcdClient(_server.ClientUrl))
        {
            await client.PutAsync("/checkpointed/a", "1", deadline: DateTime.UtcNow + CallTimeout);
        }

        // A graceful stop checkpoints the store and truncates the WAL behind it: the WAL no longer holds every
        // write, so a checkpoint whose metadata cannot be read must not be dropped.
        (await _server.TerminateAsync(TimeSpan.FromSeconds(30))).Should().Be(0);
        var metadata = Directory.GetFiles(Path.Combine(_server.DataDir, "member", "kv", "checkpoints", "cpr-checkpoints"), "info.dat*", SearchOption.AllDirectories);
        metadata.Should().NotBeEmpty();
        foreach (var file in metadata)
        {
            await File.WriteAllBytesAsync(file, []);
        }

        var logBefore = _server.LogLineCount;
        _server.StartProcess("existing");
        (await _server.WaitExitAsync(ServerProcess.StartTimeout)).Should().Be(1);
        var log = _server.LogSince(logBefore);
        output.WriteLine(log);
        log.Should().Contain("has readable metadata").And.Contain("info.dat").And.NotContain("Unhandled exception");
        metadata.Should().OnlyContain(file => File.Exists(file), "nothing is dropped");
    }

    public void Dispose() => _server.Dispose();
}
