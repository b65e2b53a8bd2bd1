using System.Threading.Channels;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Api;
using KvStore.Server.Apply;
using KvStore.Server.Hosting;
using KvStore.Server.Lease;
using KvStore.Server.Watch;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// Three full servers in one process (<see cref="ServerHost.Build"/>: the real DI graph with KvService's store, the
/// lessor and the watch hub): a member that was down while the log was compacted past it catches up from a snapshot,
/// installed into the same store instance the services read, with leases and watches rebuilt from it.
/// </summary>
public sealed partial class SnapshotInstallTests
{
    [Fact]
    public async Task A_restarted_member_behind_the_compacted_log_installs_a_snapshot_its_services_see()
    {
        var root = Path.Combine(Path.GetTempPath(), "kvstore-snapinstall-" + Guid.NewGuid().ToString("N")[..8]);
        var peerPorts = LoopbackPorts.Take(3);
        var clientPorts = LoopbackPorts.Take(3);
        var initial = string.Join(',', peerPorts.Select((p, i) => $"s{i}=http://127.0.0.1:{p}"));
        var servers = new FullServer?[3];
        try
        {
            for (var i = 0; i < 3; i++)
            {
                servers[i] = await FullServer.StartAsync(root, i, peerPorts[i], clientPorts[i], initial);
            }

            var all = servers.Select(s => s!).ToList();
            var leader = await WaitLeaderAsync(all);
            var victim = all.First(s => s != leader);
            var v = Array.IndexOf(servers, victim);
            await leader.PutAsync("before", "1");
            await AppliedAsync(victim, leader.Host.Store.ConsistentIndex);
            await victim.DisposeAsync();

            // With the victim down: a lease it never saw applied, and more than SnapshotCatchUpEntries (5,000) entries
            // with --snapshot-count 50, so the log the victim needs is compacted away on both running members.
            var running = all.Where(s => s != victim).ToList();
            await leader.ProposeAsync(new InternalRequest { LeaseGrant = new LeaseGrantRequest { ID = 0x77, TTL = 600 } });
            await leader.ProposeAsync(new InternalRequest
            {
                Put = new PutRequest { Key = ByteString.CopyFromUtf8("leased"), Value = ByteString.CopyFromUtf8("x"), Lease = 0x77 },
            });
            const int writes = 5_300;
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, 32).Select(w => Task.Run(async () =>
            {
                for (var i = Interlocked.Increment(ref next); i < writes; i = Interlocked.Increment(ref next))
                {
                    await running[w % 2].PutAsync($"k/{i % 300:D3}", $"v{i}");
                }
            })));

            var restarted = await FullServer.StartAsync(root, v, peerPorts[v], clientPorts[v], initial);
            servers[v] = restarted;
            var target = leader.Host.Store.ConsistentIndex;
            await AppliedAsync(restarted, target, 60);

            // The services' store is the one RaftHost restored in place, and it has everything.
            var store = restarted.App.Services.GetRequiredService<MvccStore>();
            Assert.Same(restarted.Host.Store, store);
            Assert.True(restarted.Host.Store.ConsistentIndex >= target);
            await AppliedAsync(restarted, leader.Host.Store.ConsistentIndex);
            var (range, error) = RangeExecutor.Execute(store, new RangeRequest { Key = ByteString.CopyFromUtf8("k/"), RangeEnd = ByteString.CopyFromUtf8("k0") });
            Assert.Null(error);
            Assert.Equal(300, ((RangeResponse)range!).Kvs.Count);
            Assert.Equal(leader.Host.Store.HashKV(0).Hash, store.HashKV(0).Hash);
            Assert.Equal(leader.Host.Store.CurrentRevision, store.CurrentRevision);

            // The lessor was reloaded from the snapshot: the lease granted while this member was down is listed, with its key.
            var lessor = restarted.App.Services.GetRequiredService<Lessor>();
            Assert.Contains(lessor.Leases(), l => l.ID == 0x77);

            // Writes after the install reach its store and its watchers; history from before the install is watchable.
            var hub = restarted.App.Services.GetRequiredService<WatchHub>();
            using var session = hub.OpenSession();
            var responses = Channel.CreateUnbounded<WatchResponse>();
            using var stop = new CancellationTokenSource();
            var header = restarted.App.Services.GetRequiredService<HeaderFactory>();
            var sendLoop = session.RunSendLoopAsync(r => responses.Writer.WriteAsync(r).AsTask(), header.Create, stop.Token);
            session.Create(new WatchCreateRequest { Key = ByteString.CopyFromUtf8("before"), StartRevision = 1 });
            session.Create(new WatchCreateRequest { Key = ByteString.CopyFromUtf8("after") });
            var rev = await restarted.PutAsync("after", "snapshot");
            var seen = new List<string>();
            using var timeout = Timeout();
            while (!(seen.Contains("before=1") && seen.Contains("after=snapshot")))
            {
                var r = await responses.Reader.ReadAsync(timeout.Token);
                seen.AddRange(r.Events.Select(e => $"{e.Kv.Key.ToStringUtf8()}={e.Kv.Value.ToStringUtf8()}"));
            }

            await AppliedAsync(leader, restarted.Host.Store.ConsistentIndex);
            Assert.Equal(rev, leader.Host.Store.Range("after"u8, [], default).Kvs[0].ModRevision);
            await stop.CancelAsync();
            try
            {
                await sendLoop;
            }
            catch (OperationCanceledException)
            {
            }
        }
        finally
        {
            foreach (var s in servers)
            {
                if (s is not null)
                {
                    await s.DisposeAsync();
                }
            }

            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static CancellationTokenSource Timeout(int seconds = 30) => new(TimeSpan.FromSeconds(seconds));

    private static async Task AppliedAsync(FullServer server, ulong index, int seconds = 30)
    {
        using var timeout = Timeout(seconds);
        await server.Host.WaitAppliedAsync(index, timeout.Token);
    }

    private static Task<FullServer> WaitLeaderAsync(List<FullServer> servers) => FullServer.WaitLeaderAsync(servers);
}
