using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;
using V3Electionpb;
using V3Lockpb;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// The dotnet-etcd client (10.0.0) on a 3-member cluster of real processes, one client per member so every call goes
/// to a follower as well as to the leader: leases (grant, the client's own keep-alive loop past the TTL, time-to-live
/// with keys, list, revoke), a watch that sees the put and the revoke's delete, Lock/Unlock and Campaign/Leader/Resign.
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class DotnetEtcdOnEveryMemberTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Leases_watches_locks_and_elections_work_through_every_member()
    {
        await using var c = await TestCluster.StartAsync(output, 3);
        var leader = await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(30));
        var order = c.Members.Where(m => m != leader).Append(leader).ToArray();
        var clients = order.ToDictionary(m => m, m => new EtcdClient(m.ClientUrl));
        try
        {
            foreach (var via in order)
            {
                var client = clients[via];
                var other = clients[order.First(m => m != via)];
                var prefix = $"/dotnet/{via.Name}/";
                output.WriteLine($"through {via.Name} ({(via == leader ? "leader" : "follower")})");

                // A watch through this member on the prefix: the leased put, then the delete its revoke causes.
                var events = new List<Mvccpb.Event>();
                var created = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var deleted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                using var stopWatch = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                var watching = client.WatchAsync(
                    new WatchRequest { CreateRequest = new WatchCreateRequest { Key = Utf8(prefix), RangeEnd = Utf8(TestCluster.PrefixEnd(prefix)) } },
                    (WatchResponse r) =>
                    {
                        if (r.Created)
                        {
                            created.TrySetResult();
                        }

                        lock (events)
                        {
                            events.AddRange(r.Events);
                            if (events.Any(e => e.Type == Mvccpb.Event.Types.EventType.Delete))
                            {
                                deleted.TrySetResult();
                            }
                        }
                    },
                    cancellationToken: stopWatch.Token);
                await created.Task.WaitAsync(CallTimeout);

                // Grant a short lease and keep it alive with the client's own loop for longer than its TTL.
                var grant = await client.LeaseGrantAsync(new LeaseGrantRequest { TTL = 3 }, deadline: Deadline());
                grant.TTL.Should().Be(3);
                var put = await client.PutAsync(new PutRequest { Key = Utf8(prefix + "leased"), Value = Utf8("v"), Lease = grant.ID }, deadline: Deadline());
                using (var keepAlive = new CancellationTokenSource())
                {
                    var loop = client.LeaseKeepAlive(grant.ID, keepAlive.Token);
                    var until = DateTime.UtcNow + TimeSpan.FromSeconds(5);
                    while (DateTime.UtcNow < until)
                    {
                        // Read through another member: the lease is alive and holds the key (read your writes).
                        var ttl = await other.LeaseTimeToLiveAsync(new LeaseTimeToLiveRequest { ID = grant.ID, Keys = true }, deadline: Deadline());
                        ttl.TTL.Should().BeGreaterThan(0, "the keep-alive loop through {0} renews the lease", via.Name);
                        ttl.Keys.Select(k => k.ToStringUtf8()).Should().Equal(prefix + "leased");
                        await Task.Delay(500);
                    }

                    await keepAlive.CancelAsync();
                    await FluentActions.Awaiting(() => loop.WaitAsync(CallTimeout)).Should().NotThrowAsync<TimeoutException>();
                }

                (await client.LeaseLeasesAsync(new LeaseLeasesRequest(), deadline: Deadline())).Leases.Select(l => l.ID).Should().Contain(grant.ID);
                var revoked = await client.LeaseRevokeAsync(new LeaseRevokeRequest { ID = grant.ID }, deadline: Deadline());
                (await other.GetAsync(prefix + "leased", deadline: Deadline())).Kvs.Should().BeEmpty("the revoke deleted the key");
                await deleted.Task.WaitAsync(CallTimeout);
                await stopWatch.CancelAsync();
                await IgnoreCancellationAsync(watching);
                lock (events)
                {
                    events.Select(e => (e.Type, e.Kv.Key.ToStringUtf8(), e.Kv.ModRevision)).Should().Equal(
                        (Mvccpb.Event.Types.EventType.Put, prefix + "leased", put.Header.Revision),
                        (Mvccpb.Event.Types.EventType.Delete, prefix + "leased", revoked.Header.Revision));
                }

                // Lock through this member while another member's client holds it: granted only after the unlock.
                var lockName = prefix + "lock";
                var sessions = new[] { other, client }.Select(async k => (await k.LeaseGrantAsync(new LeaseGrantRequest { TTL = 30 }, deadline: Deadline())).ID).ToArray();
                var held = await other.LockAsync(lockName, await sessions[0], deadline: Deadline());
                var waiting = client.LockAsync(lockName, await sessions[1], deadline: DateTime.UtcNow.AddSeconds(60));
                (await Task.WhenAny(waiting, Task.Delay(TimeSpan.FromSeconds(1)))).Should().NotBe(waiting, "the lock is held");
                await other.UnlockAsync(held.Key.ToStringUtf8(), deadline: Deadline());
                var got = await waiting.WaitAsync(CallTimeout);
                got.Key.ToStringUtf8().Should().StartWith(lockName + "/");
                got.Header.Revision.Should().BeGreaterThan(held.Header.Revision);
                await client.UnlockAsync(got.Key.ToStringUtf8(), deadline: Deadline());
                foreach (var session in sessions)
                {
                    await client.LeaseRevokeAsync(new LeaseRevokeRequest { ID = await session }, deadline: Deadline());
                }

                // Campaign through this member, the leader seen through another, resign through this one.
                var electionLease = await client.LeaseGrantAsync(new LeaseGrantRequest { TTL = 30 }, deadline: Deadline());
                var won = await client.CampaignAsync(new CampaignRequest { Name = Utf8(prefix + "el"), Lease = electionLease.ID, Value = Utf8(via.Name) }, deadline: Deadline());
                won.Leader.Name.ToStringUtf8().Should().Be(prefix + "el");
                var seen = await other.LeaderAsync(prefix + "el", deadline: Deadline());
                seen.Kv.Value.ToStringUtf8().Should().Be(via.Name);
                seen.Kv.Key.Should().Equal(won.Leader.Key);
                await client.ResignAsync(new ResignRequest { Leader = won.Leader }, deadline: Deadline());
                var after = await FluentActions.Awaiting(() => other.LeaderAsync(prefix + "el", deadline: Deadline())).Should().ThrowAsync<Grpc.Core.RpcException>();
                after.Which.Status.Detail.Should().Be("election: no leader");
                await client.LeaseRevokeAsync(new LeaseRevokeRequest { ID = electionLease.ID }, deadline: Deadline());
            }
        }
        finally
        {
            foreach (var client in clients.Values)
            {
                client.Dispose();
            }
        }

        var revision = (await TestCluster.GetAsync(leader, "/", CallTimeout)).Header.Revision;
        await c.WaitConvergedAsync(c.Members, revision, TimeSpan.FromSeconds(30));
    }

    private static DateTime Deadline() => DateTime.UtcNow + CallTimeout;

    private static ByteString Utf8(string s) => ByteString.CopyFromUtf8(s);

    private static async Task IgnoreCancellationAsync(Task watching)
    {
        try
        {
            await watching.WaitAsync(CallTimeout);
        }
        catch (OperationCanceledException)
        {
        }
        catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.Cancelled)
        {
        }
    }
}
