using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// A Maintenance.Snapshot stream that does not finish: cut by the client, or by a SIGKILL of the member. The stream
/// must never end as if it were complete (etcdctl 3.4's `snapshot save` keeps its file only when the stream ended
/// without error and its size has room for the SHA-256 trailer; otherwise it removes its .part file), the bytes a
/// client got before the cut must not pass for a snapshot, and the member must keep serving, or restart with its data
/// and no export leftovers.
/// </summary>
public sealed class SnapshotStreamCrashTests(ITestOutputHelper output) : IDisposable
{
    private const int Keys = 500;
    private const int ValueBytes = 32 * 1024;
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);
    private readonly string _root = ServerProcess.CreateTempDir("kvstore-e2e-snapcut-");
    private readonly string _etcdctl = Tools.Require("etcdctl", "etcd-client");
    private readonly ServerProcess _server = new();

    public void Dispose()
    {
        output.WriteLine(_server.LogText());
        _server.Dispose();
        ServerProcess.TryDelete(_root);
    }

    [Fact]
    public async Task A_cut_or_killed_snapshot_stream_leaves_no_valid_snapshot_and_the_member_serves_on()
    {
        await _server.StartAsync();
        long revision;
        using (var channel = GrpcChannel.ForAddress(_server.ClientUrl))
        {
            var kv = new KV.KVClient(channel);
            var value = ByteString.CopyFrom(new byte[ValueBytes]);
            revision = 0;
            for (var i = 0; i < Keys; i += 25)
            {
                var puts = await Task.WhenAll(Enumerable.Range(i, 25).Select(k =>
                    kv.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8($"/big/{k:D4}"), Value = value }, deadline: DateTime.UtcNow + CallTimeout).ResponseAsync));
                revision = Math.Max(revision, puts.Max(p => p.Header.Revision));
            }

            // 1. The client reads one chunk and cancels: the member serves on, and the next snapshot is whole.
            using (var cts = new CancellationTokenSource())
            {
                using var call = new Maintenance.MaintenanceClient(channel).Snapshot(new SnapshotRequest(), cancellationToken: cts.Token);
                (await call.ResponseStream.MoveNext(CancellationToken.None)).Should().BeTrue();
                call.ResponseStream.Current.RemainingBytes.Should().BeGreaterThan(10UL * ValueBytes);
                await cts.CancelAsync();
            }

            (await kv.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8("/after-cancel"), Value = ByteString.CopyFromUtf8("x") }, deadline: DateTime.UtcNow + CallTimeout))
                .Header.Revision.Should().Be(revision + 1);
            revision++;
        }

        await AssertWholeSnapshotAsync("after-cancel.db", revision);

        // 2. The member is SIGKILLed while a client reads: the stream ends in an error, never as complete.
        var partial = Path.Combine(_root, "partial.db");
        using (var channel = GrpcChannel.ForAddress(_server.ClientUrl))
        {
            using var call = new Maintenance.MaintenanceClient(channel).Snapshot(new SnapshotRequest());
            await using var file = File.Create(partial);
            (await call.ResponseStream.MoveNext(CancellationToken.None)).Should().BeTrue();
            var first = call.ResponseStream.Current;
            var total = (ulong)first.Blob.Length + first.RemainingBytes;
            first.Blob.WriteTo(file);
            _server.Kill();

            var received = (ulong)first.Blob.Length;
            var act = async () =>
            {
                while (await call.ResponseStream.MoveNext(CancellationToken.None))
                {
                    call.ResponseStream.Current.Blob.WriteTo(file);
                    received += (ulong)call.ResponseStream.Current.Blob.Length;
                }
            };
            await act.Should().ThrowAsync<RpcException>("a stream whose member died must not end as if complete");
            output.WriteLine($"received {received} of {total} bytes before the stream broke");
            received.Should().BeLessThan(total);
        }

        // What a client kept of the broken stream is no snapshot: etcdctl's restore and ours refuse it (ours leaves no
        // data dir; etcdctl 3.4 leaves the directories it made before checking).
        var env = new Dictionary<string, string> { ["ETCDCTL_API"] = "3" };
        var restore = await Tools.RunAsync(_etcdctl, ["snapshot", "restore", partial, "--data-dir", Path.Combine(_root, "etcd-restored")], env: env);
        restore.ExitCode.Should().NotBe(0, restore.ToString());
        restore.Stderr.Should().Contain("snapshot missing hash");
        var restoreDir = Path.Combine(_root, "restored");
        var ours = await Tools.RunAsync(ServerProcess.KvStorePath, ["snapshot", "restore", partial, "--data-dir", restoreDir]);
        ours.ExitCode.Should().Be(1, ours.ToString());
        Directory.Exists(restoreDir).Should().BeFalse();

        // 3. The member restarts with every acknowledged write and no export file left behind; snapshots work again.
        await _server.StartAsync();
        var exportDir = Path.Combine(_server.DataDir, "member", "snapshot-export");
        (Directory.Exists(exportDir) ? Directory.GetFiles(exportDir) : []).Should().BeEmpty();
        await AssertWholeSnapshotAsync("after-restart.db", revision);
    }

    /// <summary>etcdctl snapshot save succeeds and etcdctl's status reports the revision and every key.</summary>
    private async Task AssertWholeSnapshotAsync(string name, long revision)
    {
        var env = new Dictionary<string, string> { ["ETCDCTL_API"] = "3" };
        var file = Path.Combine(_root, name);
        var save = await Tools.RunAsync(_etcdctl, ["--endpoints", _server.Endpoint, "snapshot", "save", file], env: env);
        save.ExitCode.Should().Be(0, save.ToString());
        File.Exists(file + ".part").Should().BeFalse();
        var status = await Tools.RunAsync(_etcdctl, ["snapshot", "status", file, "-w", "json"], env: env);
        status.ExitCode.Should().Be(0, status.ToString());
        using var json = System.Text.Json.JsonDocument.Parse(status.Stdout);
        json.RootElement.GetProperty("revision").GetInt64().Should().Be(revision);
        json.RootElement.GetProperty("totalKey").GetInt64().Should().BeGreaterThanOrEqualTo(Keys);
    }
}
