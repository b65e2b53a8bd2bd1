using Etcdserverpb;
using KvStore.Internal;
using KvStore.Server.Lease;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// Keep-alives through a follower of an in-process 3-member cluster: the renewals of all its clients share one peer
/// stream to the leader, and a leader change in the middle of many concurrent renewals leaves each of them answered
/// with the full TTL or failed with one of etcd's errors — never lost, never waiting forever.
/// </summary>
public sealed class LeaseForwardingTests
{
    private const long Ttl = 60;
    private const int Clients = 64;

    /// <summary>What a client may see from a renewal around a leader change (etcd's own answers then).</summary>
    private static readonly string[] LeaderChangeErrors =
        [EtcdErrors.Timeout.Message, EtcdErrors.NoLeader.Message, EtcdErrors.TimeoutWaitAppliedIndex.Message];

    [Fact]
    public async Task Concurrent_keep_alives_through_a_follower_share_one_stream_and_survive_a_leader_change()
    {
        var root = Path.Combine(Path.GetTempPath(), "kvstore-leasefwd-" + Guid.NewGuid().ToString("N")[..8]);
        var peerPorts = LoopbackPorts.Take(3);
        var clientPorts = LoopbackPorts.Take(3);
        var initial = string.Join(',', peerPorts.Select((p, i) => $"s{i}=http://127.0.0.1:{p}"));
        var servers = new List<FullServer>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                servers.Add(await FullServer.StartAsync(root, i, peerPorts[i], clientPorts[i], initial));
            }

            var leader = await FullServer.WaitLeaderAsync(servers);
            var follower = servers.First(s => s != leader);
            var target = servers.First(s => s != leader && s != follower);
            var leases = Enumerable.Range(1, 8).Select(i => (long)(0x100 + i)).ToArray();
            foreach (var id in leases)
            {
                await leader.ProposeAsync(new InternalRequest { LeaseGrant = new LeaseGrantRequest { ID = id, TTL = Ttl } });
            }

            var forwarder = follower.App.Services.GetRequiredService<LeaseForwarder>();

            // Many clients at once, all answered over the one stream the first renewal opened.
            (await RenewAllAsync(forwarder, leases, renewalsEach: 20)).Should().OnlyContain(o => o == null, "every renewal through the follower gets the full TTL");
            forwarder.KeepAliveStreamsOpened.Should().Be(1, "all clients' renewals share one stream to the leader");
            forwarder.KeepAlivesWaiting.Should().Be(0);

            // The same load running while leadership moves to the other follower.
            using var stop = new CancellationTokenSource();
            var answered = 0;
            var beforeMove = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var outcomes = new List<string?>[Clients];
            var load = Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
            {
                outcomes[c] = [];
                for (var i = 0; i < 2_000 && !stop.IsCancellationRequested; i++)
                {
                    outcomes[c].Add(await RenewAsync(forwarder, leases[c % leases.Length]));
                    if (Interlocked.Increment(ref answered) == Clients * 4)
                    {
                        beforeMove.TrySetResult();
                    }
                }
            })).ToArray();
            await beforeMove.Task.WaitAsync(TimeSpan.FromSeconds(60));
            using (var moving = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            {
                await leader.Host.Members.MoveLeaderAsync(target.Host.MemberId, moving.Token);
            }

            (await FullServer.WaitLeaderAsync(servers)).Should().BeSameAs(target);
            var afterMove = Volatile.Read(ref answered);
            using (var settling = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            {
                // Bounded: the load keeps renewing until well after the change, then stops.
                while (Volatile.Read(ref answered) < afterMove + (Clients * 4))
                {
                    await Task.Delay(20, settling.Token);
                }
            }

            await stop.CancelAsync();
            await Task.WhenAll(load).WaitAsync(TimeSpan.FromSeconds(60));
            var all = outcomes.SelectMany(o => o).ToList();
            all.Where(o => o != null && !LeaderChangeErrors.Contains(o)).Should().BeEmpty("a renewal that fails around the change fails with etcd's error");
            outcomes.Select(o => o[^1]).Should().OnlyContain(o => o == null, "every client renews again once the new leader is known");
            forwarder.KeepAlivesWaiting.Should().Be(0, "no renewal is left waiting on the old or the new stream");
            var opened = forwarder.KeepAliveStreamsOpened;
            opened.Should().BeGreaterThanOrEqualTo(2, "a new leader needs a new stream");

            // Settled on the new leader: the clients share its stream again, and a client that gives up leaves nothing behind.
            (await RenewAllAsync(forwarder, leases, renewalsEach: 20)).Should().OnlyContain(o => o == null);
            forwarder.KeepAliveStreamsOpened.Should().Be(opened);
            using (var givenUp = new CancellationTokenSource())
            {
                var renewal = forwarder.KeepAliveAsync(leases[0], givenUp.Token);
                await givenUp.CancelAsync();
                try
                {
                    (await renewal).Should().Be(Ttl);
                }
                catch (OperationCanceledException)
                {
                }
            }

            forwarder.KeepAlivesWaiting.Should().Be(0);
            (await forwarder.KeepAliveAsync(0x7777, CancellationToken.None)).Should().BeNull("an unknown lease is answered as such over the stream");
        }
        finally
        {
            foreach (var s in servers)
            {
                await s.DisposeAsync();
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

    /// <summary><see cref="Clients"/> clients at once, each renewing <paramref name="renewalsEach"/> times; every outcome.</summary>
    private static async Task<string?[]> RenewAllAsync(LeaseForwarder forwarder, long[] leases, int renewalsEach)
    {
        var outcomes = await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            var mine = new List<string?>();
            for (var i = 0; i < renewalsEach; i++)
            {
                mine.Add(await RenewAsync(forwarder, leases[c % leases.Length]));
            }

            return mine;
        }))).WaitAsync(TimeSpan.FromSeconds(120));
        return [.. outcomes.SelectMany(o => o)];
    }

    /// <summary>One renewal: null when answered with the full TTL, else what went wrong.</summary>
    private static async Task<string?> RenewAsync(LeaseForwarder forwarder, long id)
    {
        try
        {
            var ttl = await forwarder.KeepAliveAsync(id, CancellationToken.None);
            return ttl == Ttl ? null : $"TTL {ttl}";
        }
        catch (EtcdException e)
        {
            return e.Status.Detail;
        }
    }
}
