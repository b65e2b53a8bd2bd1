using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>The dotnet-etcd NuGet client (10.0.0) against the real binary.</summary>
public sealed class DotnetEtcdTests : SharedServerTest, IClassFixture<ServerFixture>
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(20);

    public DotnetEtcdTests(ServerFixture fixture, ITestOutputHelper output)
        : base(fixture, output)
    {
    }

    private static DateTime Deadline => DateTime.UtcNow + CallTimeout;

    internal static EtcdClient Connect(ServerProcess server) => new(server.ClientUrl);

    [Fact]
    public async Task Put_get_getrange_delete()
    {
        using var client = Connect(Server);
        var put = await client.PutAsync(Prefix + "a", "1", deadline: Deadline);
        put.Header.Revision.Should().BeGreaterThan(0);
        await client.PutAsync(Prefix + "b", "2", deadline: Deadline);
        await client.PutAsync(Prefix + "c", "3", deadline: Deadline);

        (await client.GetValAsync(Prefix + "a", deadline: Deadline)).Should().Be("1");
        var get = await client.GetAsync(Prefix + "b", deadline: Deadline);
        get.Kvs.Should().ContainSingle();
        get.Kvs[0].ModRevision.Should().Be(put.Header.Revision + 1);
        get.Kvs[0].Version.Should().Be(1);

        var range = await client.GetRangeAsync(Prefix, deadline: Deadline);
        range.Count.Should().Be(3);
        range.Kvs.Select(kv => kv.Key.ToStringUtf8()).Should().Equal(Prefix + "a", Prefix + "b", Prefix + "c");
        (await client.GetRangeValAsync(Prefix, deadline: Deadline)).Should().BeEquivalentTo(
            new Dictionary<string, string> { [Prefix + "a"] = "1", [Prefix + "b"] = "2", [Prefix + "c"] = "3" });

        var del = await client.DeleteAsync(Prefix + "a", deadline: Deadline);
        del.Deleted.Should().Be(1);
        (await client.GetAsync(Prefix + "a", deadline: Deadline)).Kvs.Should().BeEmpty();
        var delRange = await client.DeleteRangeAsync(Prefix, deadline: Deadline);
        delRange.Deleted.Should().Be(2);
        (await client.GetRangeAsync(Prefix, deadline: Deadline)).Count.Should().Be(0);
    }

    [Fact]
    public async Task Range_request_with_limit_and_revision()
    {
        using var client = Connect(Server);
        var first = await client.PutAsync(Prefix + "k", "v1", deadline: Deadline);
        await client.PutAsync(Prefix + "k", "v2", deadline: Deadline);
        await client.PutAsync(Prefix + "l", "x", deadline: Deadline);

        var old = await client.GetAsync(new RangeRequest { Key = Bytes(Prefix + "k"), Revision = first.Header.Revision }, deadline: Deadline);
        old.Kvs.Single().Value.ToStringUtf8().Should().Be("v1");

        var limited = await client.GetAsync(
            new RangeRequest { Key = Bytes(Prefix), RangeEnd = Bytes(Prefix[..^1] + "0"), Limit = 1 }, deadline: Deadline);
        limited.Kvs.Should().ContainSingle().Which.Key.ToStringUtf8().Should().Be(Prefix + "k");
        limited.More.Should().BeTrue();
        limited.Count.Should().Be(2);
    }

    [Fact]
    public async Task Txn_compare_and_swap()
    {
        using var client = Connect(Server);
        var key = Prefix + "cas";
        var created = await client.TransactionAsync(CreateIfAbsent(key, "v1"), deadline: Deadline);
        created.Succeeded.Should().BeTrue();
        var again = await client.TransactionAsync(CreateIfAbsent(key, "v2"), deadline: Deadline);
        again.Succeeded.Should().BeFalse();
        again.Responses.Should().ContainSingle().Which.ResponseRange.Kvs.Single().Value.ToStringUtf8().Should().Be("v1");
        again.Header.Revision.Should().Be(created.Header.Revision, "the failure branch only read");

        var modRev = again.Responses[0].ResponseRange.Kvs[0].ModRevision;
        var update = new TxnRequest();
        update.Compare.Add(new Compare { Key = Bytes(key), Target = Compare.Types.CompareTarget.Mod, Result = Compare.Types.CompareResult.Equal, ModRevision = modRev });
        update.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = Bytes(key), Value = Bytes("v3"), PrevKv = true } });
        update.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = Bytes(key + "2"), Value = Bytes("v3") } });
        var updated = await client.TransactionAsync(update, deadline: Deadline);
        updated.Succeeded.Should().BeTrue();
        updated.Responses[0].ResponsePut.PrevKv.Value.ToStringUtf8().Should().Be("v1");
        updated.Header.Revision.Should().Be(created.Header.Revision + 1);

        var kvs = (await client.GetRangeAsync(Prefix + "cas", deadline: Deadline)).Kvs;
        kvs.Should().HaveCount(2);
        kvs.Select(kv => kv.ModRevision).Distinct().Should().ContainSingle().Which.Should().Be(updated.Header.Revision);
    }

    [Fact]
    public async Task Lease_grant_and_put_with_lease()
    {
        using var client = Connect(Server);
        var lease = await client.LeaseGrantAsync(new LeaseGrantRequest { TTL = 60 }, deadline: Deadline);
        lease.ID.Should().NotBe(0);
        lease.TTL.Should().Be(60);
        lease.Error.Should().BeEmpty();

        await client.PutAsync(new PutRequest { Key = Bytes(Prefix + "leased"), Value = Bytes("x"), Lease = lease.ID }, deadline: Deadline);
        var kv = (await client.GetAsync(Prefix + "leased", deadline: Deadline)).Kvs.Single();
        kv.Lease.Should().Be(lease.ID);

        var ttl = await client.LeaseTimeToLiveAsync(new LeaseTimeToLiveRequest { ID = lease.ID, Keys = true }, deadline: Deadline);
        ttl.TTL.Should().BeInRange(1, 60);
        ttl.GrantedTTL.Should().Be(60);
        ttl.Keys.Select(k => k.ToStringUtf8()).Should().Equal(Prefix + "leased");

        await client.LeaseRevokeAsync(new LeaseRevokeRequest { ID = lease.ID }, deadline: Deadline);
        (await client.GetAsync(Prefix + "leased", deadline: Deadline)).Kvs.Should().BeEmpty("revoking a lease deletes its keys");

        var act = () => client.PutAsync(new PutRequest { Key = Bytes(Prefix + "gone"), Value = Bytes("x"), Lease = lease.ID }, deadline: Deadline);
        (await act.Should().ThrowAsync<Grpc.Core.RpcException>()).Which.Status.Detail.Should().Be("etcdserver: requested lease not found");
    }

    [Fact]
    public async Task Watch_delivers_puts_and_deletes_in_order()
    {
        using var client = Connect(Server);
        var events = new List<Mvccpb.Event>();
        var created = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gotAll = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var request = new WatchRequest
        {
            CreateRequest = new WatchCreateRequest { Key = Bytes(Prefix), RangeEnd = Bytes(Prefix[..^1] + "0"), PrevKv = true },
        };
        var watchTask = client.WatchAsync(
            request,
            (WatchResponse r) =>
            {
                if (r.Created)
                {
                    created.TrySetResult();
                }

                lock (events)
                {
                    events.AddRange(r.Events);
                    if (events.Count >= 3)
                    {
                        gotAll.TrySetResult();
                    }
                }
            },
            cancellationToken: cts.Token);

        await created.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await client.PutAsync(Prefix + "w", "1", deadline: Deadline);
        await client.PutAsync(Prefix + "w", "2", deadline: Deadline);
        await client.DeleteAsync(Prefix + "w", deadline: Deadline);
        await client.PutAsync(Prefix[..^1] + "0outside", "x", deadline: Deadline);
        await gotAll.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await cts.CancelAsync();
        try
        {
            await watchTask.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (OperationCanceledException)
        {
        }
        catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.Cancelled)
        {
        }

        List<Mvccpb.Event> seen;
        lock (events)
        {
            seen = [.. events];
        }

        seen.Select(e => (e.Type, e.Kv.Key.ToStringUtf8(), e.Kv.Value.ToStringUtf8())).Should().Equal(
            (Mvccpb.Event.Types.EventType.Put, Prefix + "w", "1"),
            (Mvccpb.Event.Types.EventType.Put, Prefix + "w", "2"),
            (Mvccpb.Event.Types.EventType.Delete, Prefix + "w", ""));
        seen[1].PrevKv.Value.ToStringUtf8().Should().Be("1");
        seen[2].PrevKv.Value.ToStringUtf8().Should().Be("2");
        seen[1].Kv.ModRevision.Should().Be(seen[0].Kv.ModRevision + 1);
        seen[2].Kv.ModRevision.Should().Be(seen[1].Kv.ModRevision + 1);
    }

    private static ByteString Bytes(string s) => ByteString.CopyFromUtf8(s);

    private static TxnRequest CreateIfAbsent(string key, string value)
    {
        var txn = new TxnRequest();
        txn.Compare.Add(new Compare { Key = Bytes(key), Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0 });
        txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = Bytes(key), Value = Bytes(value) } });
        txn.Failure.Add(new RequestOp { RequestRange = new RangeRequest { Key = Bytes(key) } });
        return txn;
    }
}
