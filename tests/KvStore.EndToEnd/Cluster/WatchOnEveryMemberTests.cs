using System.Diagnostics;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// Watches on a follower of a 3-member cluster of real processes: progress notifications at
/// --watch-progress-notify-interval, progress on request, and a require-leader (hasleader=true) stream ended with
/// etcd's "no leader" error when its member loses the leader.
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class WatchOnEveryMemberTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_follower_honours_the_progress_interval_and_ends_require_leader_streams_when_it_loses_the_leader()
    {
        await using var c = await TestCluster.StartAsync(output, 3, ["--watch-progress-notify-interval=1s"]);
        var leader = await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(30));
        var follower = c.Members.First(m => m != leader);
        var rev = await TestCluster.PutAsync(leader, "/w/a", "1", TimeSpan.FromSeconds(15));

        using var watch = new Etcdserverpb.Watch.WatchClient(follower.Channel).Watch(
            new Metadata { { "hasleader", "true" } }, DateTime.UtcNow.AddSeconds(120));
        await watch.RequestStream.WriteAsync(new WatchRequest
        {
            // From the revision after the put: the follower may not have applied the put yet, and a watch from "now"
            // there would then (rightly) deliver it.
            CreateRequest = new WatchCreateRequest { Key = ByteString.CopyFromUtf8("/w/"), RangeEnd = ByteString.CopyFromUtf8("/w0"), ProgressNotify = true, StartRevision = rev + 1 },
        });
        (await NextAsync(watch)).Created.Should().BeTrue();

        // With a 1 s interval an idle watcher gets an empty progress response carrying its ID and the revision.
        var sw = Stopwatch.StartNew();
        var progress = await NextAsync(watch);
        progress.Events.Should().BeEmpty();
        progress.WatchId.Should().Be(0);
        progress.Header.Revision.Should().Be(rev);
        sw.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(5), "the interval is 1 s, not etcd's default 10 minutes");

        // Progress on request: every watcher of the stream is synced, so the answer comes at once (watch_id -1).
        await watch.RequestStream.WriteAsync(new WatchRequest { ProgressRequest = new WatchProgressRequest() });
        WatchResponse requested;
        do
        {
            requested = await NextAsync(watch);
        }
        while (requested.WatchId != -1);
        requested.Header.Revision.Should().Be(rev);

        // The follower loses its leader (the other two members die): the stream ends with etcd's error after about
        // three election timeouts without a leader.
        foreach (var m in c.Members.Where(m => m != follower))
        {
            m.Kill();
        }

        sw.Restart();
        var ended = await FluentActions.Awaiting(async () =>
        {
            while (true)
            {
                await NextAsync(watch, TimeSpan.FromSeconds(30));
            }
        }).Should().ThrowAsync<RpcException>();
        output.WriteLine($"stream ended {sw.ElapsedMilliseconds} ms after the kill: {ended.Which.Status}");
        (ended.Which.StatusCode, ended.Which.Status.Detail).Should().Be((StatusCode.Unavailable, "etcdserver: no leader"));
        sw.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(20));
    }

    private static async Task<WatchResponse> NextAsync(AsyncDuplexStreamingCall<WatchRequest, WatchResponse> watch, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(15));
        (await watch.ResponseStream.MoveNext(cts.Token)).Should().BeTrue();
        return watch.ResponseStream.Current;
    }
}
