using Etcdserverpb;
using KvStore.Server.Apply;
using static KvStore.Server.Tests.Apply.ApplierFixture;

namespace KvStore.Server.Tests.Apply;

/// <summary>
/// Txn semantics against the real store. Start state: a=1 (rev 2), b=2 (rev 3), a=11 (rev 4), lease 7 granted;
/// so a: version 2, create 2, mod 4; b: version 1, create 3, mod 3; current revision 4.
/// </summary>
public sealed class TxnTests : IDisposable
{
    private readonly ApplierFixture _f = new();

    public TxnTests()
    {
        _f.Put("a", "1");
        _f.Put("b", "2");
        _f.Put("a", "11");
        _f.Leases.Granted.Add(7);
    }

    public static TheoryData<string, Compare, bool> CompareCases => new()
    {
        { "value equal", Cmp("a", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.Equal, value: "11"), true },
        { "value not equal", Cmp("a", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.NotEqual, value: "11"), false },
        { "value greater (bytes: 11 > 1)", Cmp("a", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.Greater, value: "1"), true },
        { "value less", Cmp("a", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.Less, value: "2"), true },
        { "value on a missing key always fails", Cmp("zz", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.NotEqual, value: "x"), false },
        { "version equal", Cmp("a", Compare.Types.CompareTarget.Version, Compare.Types.CompareResult.Equal, number: 2), true },
        { "missing key has version 0", Cmp("zz", Compare.Types.CompareTarget.Version, Compare.Types.CompareResult.Equal, number: 0), true },
        { "create revision greater", Cmp("b", Compare.Types.CompareTarget.Create, Compare.Types.CompareResult.Greater, number: 2), true },
        { "mod revision less", Cmp("a", Compare.Types.CompareTarget.Mod, Compare.Types.CompareResult.Less, number: 4), false },
        { "mod revision equal 0 means absent (create)", Cmp("zz", Compare.Types.CompareTarget.Mod, Compare.Types.CompareResult.Equal, number: 0), true },
        { "lease equal 0", Cmp("a", Compare.Types.CompareTarget.Lease, Compare.Types.CompareResult.Equal, number: 0), true },
        { "range compare holds for every key", Cmp("a", Compare.Types.CompareTarget.Version, Compare.Types.CompareResult.Greater, number: 0, rangeEnd: "c"), true },
        { "range compare fails if one key fails", Cmp("a", Compare.Types.CompareTarget.Version, Compare.Types.CompareResult.Equal, number: 2, rangeEnd: "c"), false },
    };

    [Theory]
    [MemberData(nameof(CompareCases))]
    public void Compares_follow_etcd(string name, Compare compare, bool expected)
    {
        var request = new TxnRequest();
        request.Compare.Add(compare);
        request.Success.Add(Get("a"));
        var (response, error) = _f.Txn(request);
        error.Should().BeNull(name);
        response!.Succeeded.Should().Be(expected, name);
    }

    [Fact]
    public void A_write_txn_gets_exactly_one_revision_and_inner_headers_carry_only_revisions()
    {
        var request = new TxnRequest();
        request.Success.Add(Get("a"));
        request.Success.Add(Put("x", "1"));
        request.Success.Add(Put("y", "2"));
        request.Success.Add(Get("x"));
        request.Success.Add(Del("b"));
        _f.Watch.Committed.Clear();

        var (response, error) = _f.Txn(request);
        error.Should().BeNull();
        response!.Succeeded.Should().BeTrue();
        response.Header.Revision.Should().Be(5);
        response.Header.MemberId.Should().Be(0x1111);
        response.Responses[0].ResponseRange.Header.Revision.Should().Be(4, "no write yet in this txn");
        response.Responses[0].ResponseRange.Header.MemberId.Should().Be(0);
        response.Responses[1].ResponsePut.Header.Revision.Should().Be(5);
        response.Responses[3].ResponseRange.Kvs.Single().ModRevision.Should().Be(5, "a txn reads its own writes");
        response.Responses[3].ResponseRange.Header.Revision.Should().Be(5);
        response.Responses[4].ResponseDeleteRange.Deleted.Should().Be(1);

        _f.Store.CurrentRevision.Should().Be(5);
        var x = _f.Range(new RangeRequest { Key = Bytes("x") }).Kvs.Single();
        var y = _f.Range(new RangeRequest { Key = Bytes("y") }).Kvs.Single();
        (x.ModRevision, y.ModRevision).Should().Be((5, 5));
        _f.Watch.Committed.Should().HaveCount(1);
        _f.Watch.Committed[0].Revision.Should().Be(5);
        _f.Watch.Committed[0].Events.Should().HaveCount(3);
    }

    [Fact]
    public void A_read_only_txn_does_not_bump_the_revision()
    {
        var request = new TxnRequest();
        request.Success.Add(Get("a"));
        var (response, error) = _f.Txn(request);
        error.Should().BeNull();
        response!.Header.Revision.Should().Be(4);
        _f.Store.CurrentRevision.Should().Be(4);
    }

    [Fact]
    public void A_write_txn_whose_branch_writes_nothing_keeps_the_revision()
    {
        var request = new TxnRequest();
        request.Compare.Add(Cmp("a", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.Equal, value: "nope"));
        request.Success.Add(Put("x", "1"));
        request.Failure.Add(Get("a"));
        var (response, error) = _f.Txn(request);
        error.Should().BeNull();
        response!.Succeeded.Should().BeFalse();
        response.Header.Revision.Should().Be(4);
        response.Responses.Single().ResponseRange.Kvs.Single().Value.ToStringUtf8().Should().Be("11");
    }

    [Fact]
    public void Nested_txns_evaluate_compares_before_any_write()
    {
        // The inner compare sees a=11 although the outer branch overwrote a first.
        var inner = new TxnRequest();
        inner.Compare.Add(Cmp("a", Compare.Types.CompareTarget.Value, Compare.Types.CompareResult.Equal, value: "11"));
        inner.Success.Add(Put("inner", "then"));
        inner.Failure.Add(Put("inner", "else"));
        var outer = new TxnRequest();
        outer.Success.Add(Put("a", "changed"));
        outer.Success.Add(new RequestOp { RequestTxn = inner });

        var (response, error) = _f.Txn(outer);
        error.Should().BeNull();
        response!.Responses[1].ResponseTxn.Succeeded.Should().BeTrue();
        response.Responses[1].ResponseTxn.Header.Revision.Should().Be(5);
        _f.Range(new RangeRequest { Key = Bytes("inner") }).Kvs.Single().Value.ToStringUtf8().Should().Be("then");
    }

    [Fact]
    public void A_put_with_an_unknown_lease_fails_the_whole_txn_without_writing()
    {
        var request = new TxnRequest();
        request.Success.Add(Put("x", "1"));
        request.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = Bytes("y"), Value = Bytes("2"), Lease = 99 } });
        var (_, error) = _f.Txn(request);
        error.Should().Be(EtcdErrors.LeaseNotFound);
        _f.Store.CurrentRevision.Should().Be(4);
        _f.Range(new RangeRequest { Key = Bytes("x") }).Kvs.Should().BeEmpty();
    }

    [Fact]
    public void Puts_with_a_lease_attach_and_deletes_detach()
    {
        var request = new TxnRequest();
        request.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = Bytes("l"), Value = Bytes("v"), Lease = 7 } });
        _f.Txn(request).Error.Should().BeNull();
        _f.Leases.Puts.Should().Equal(("l", 0L, 7L));

        _f.Delete("l");
        _f.Leases.Deletes.Should().Equal(("l", 7L));
    }

    [Fact]
    public void A_range_at_a_future_revision_inside_a_txn_fails()
    {
        var request = new TxnRequest();
        request.Success.Add(new RequestOp { RequestRange = new RangeRequest { Key = Bytes("a"), Revision = 100 } });
        request.Success.Add(Put("x", "1"));
        _f.Txn(request).Error.Should().Be(EtcdErrors.FutureRevision);
        _f.Store.CurrentRevision.Should().Be(4);
    }

    [Fact]
    public void Nospace_alarm_refuses_txns_with_puts_but_not_deletes()
    {
        _f.Alarm(AlarmRequest.Types.AlarmAction.Activate, 1, AlarmType.Nospace);
        var put = new TxnRequest();
        put.Success.Add(Put("x", "1"));
        _f.Txn(put).Error.Should().Be(EtcdErrors.NoSpace);

        var delete = new TxnRequest();
        delete.Success.Add(Del("b"));
        _f.Txn(delete).Error.Should().BeNull();
    }

    [Fact]
    public void Failed_requests_still_advance_the_consistent_index()
    {
        var before = _f.Store.ConsistentIndex;
        var outcome = _f.Apply(new KvStore.Internal.InternalRequest
        {
            Put = new PutRequest { Key = Bytes("x"), Value = Bytes("1"), Lease = 12345 },
        });
        outcome.Error.Should().Be(EtcdErrors.LeaseNotFound);
        _f.Store.ConsistentIndex.Should().Be(before + 1);
    }

    [Fact]
    public void Entries_at_or_below_the_consistent_index_are_skipped()
    {
        var index = _f.Store.ConsistentIndex;
        var outcome = _f.Applier.Apply(index, new KvStore.Internal.InternalRequest { Put = new PutRequest { Key = Bytes("again"), Value = Bytes("1") } });
        outcome.Should().Be(ApplyOutcome.Skipped);
        _f.Range(new RangeRequest { Key = Bytes("again") }).Kvs.Should().BeEmpty();
    }

    [Theory]
    [InlineData("ignore_value without a key", true, false)]
    [InlineData("ignore_lease without a key", false, true)]
    public void Ignore_flags_need_an_existing_key(string name, bool ignoreValue, bool ignoreLease)
    {
        var outcome = _f.Apply(new KvStore.Internal.InternalRequest
        {
            Put = new PutRequest { Key = Bytes("missing"), IgnoreValue = ignoreValue, IgnoreLease = ignoreLease },
        });
        outcome.Error.Should().Be(EtcdErrors.KeyNotFound, name);
    }

    [Fact]
    public void Ignore_value_keeps_the_value_and_prev_kv_returns_the_old_pair()
    {
        var outcome = _f.Apply(new KvStore.Internal.InternalRequest
        {
            Put = new PutRequest { Key = Bytes("a"), IgnoreValue = true, PrevKv = true },
        });
        var response = (PutResponse)outcome.Response!;
        response.PrevKv.Value.ToStringUtf8().Should().Be("11");
        response.Header.Revision.Should().Be(5);
        _f.Range(new RangeRequest { Key = Bytes("a") }).Kvs.Single().Value.ToStringUtf8().Should().Be("11");
    }

    public void Dispose() => _f.Dispose();

    private static RequestOp Get(string key) => new() { RequestRange = new RangeRequest { Key = Bytes(key) } };

    private static RequestOp Put(string key, string value) => new() { RequestPut = new PutRequest { Key = Bytes(key), Value = Bytes(value) } };

    private static RequestOp Del(string key) => new() { RequestDeleteRange = new DeleteRangeRequest { Key = Bytes(key) } };

    private static Compare Cmp(
        string key, Compare.Types.CompareTarget target, Compare.Types.CompareResult result, string? value = null, long number = 0, string rangeEnd = "")
    {
        var compare = new Compare { Key = Bytes(key), Target = target, Result = result, RangeEnd = Bytes(rangeEnd) };
        switch (target)
        {
            case Compare.Types.CompareTarget.Value:
                compare.Value = Bytes(value ?? string.Empty);
                break;
            case Compare.Types.CompareTarget.Version:
                compare.Version = number;
                break;
            case Compare.Types.CompareTarget.Create:
                compare.CreateRevision = number;
                break;
            case Compare.Types.CompareTarget.Mod:
                compare.ModRevision = number;
                break;
            case Compare.Types.CompareTarget.Lease:
                compare.Lease = number;
                break;
        }

        return compare;
    }
}
