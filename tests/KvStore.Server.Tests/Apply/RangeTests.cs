using Etcdserverpb;
using static KvStore.Server.Tests.Apply.ApplierFixture;

namespace KvStore.Server.Tests.Apply;

/// <summary>
/// Range semantics against the real store: sort order/target (stable for ties, target without order = ascend),
/// limit applied after sort and filters, count before filters, revision filters, keys_only, count_only.
/// Data: a=1 (rev 2), b=22 (rev 3), c=3 (rev 4), a=4 (rev 5): a has version 2, create 2, mod 5.
/// </summary>
public sealed class RangeTests : IDisposable
{
    private readonly ApplierFixture _f = new();

    public RangeTests()
    {
        _f.Put("a", "1");
        _f.Put("b", "22");
        _f.Put("c", "3");
        _f.Put("a", "4");
    }

    public static TheoryData<string, RangeRequest, string[], bool, long> Cases => new()
    {
        { "all keys ascending by key", Req(), ["a", "b", "c"], false, 3 },
        { "limit without sort sets more", Req(limit: 2), ["a", "b"], true, 3 },
        { "limit equal to count: no more", Req(limit: 3), ["a", "b", "c"], false, 3 },
        { "descend by key", Req(order: RangeRequest.Types.SortOrder.Descend), ["c", "b", "a"], false, 3 },
        { "descend by key with limit: limit after sort", Req(limit: 1, order: RangeRequest.Types.SortOrder.Descend), ["c"], true, 3 },
        { "mod target without order sorts ascending", Req(target: RangeRequest.Types.SortTarget.Mod), ["b", "c", "a"], false, 3 },
        { "descend by mod", Req(order: RangeRequest.Types.SortOrder.Descend, target: RangeRequest.Types.SortTarget.Mod), ["a", "c", "b"], false, 3 },
        { "ascend by create", Req(order: RangeRequest.Types.SortOrder.Ascend, target: RangeRequest.Types.SortTarget.Create), ["a", "b", "c"], false, 3 },
        { "descend by version: ties keep key order", Req(order: RangeRequest.Types.SortOrder.Descend, target: RangeRequest.Types.SortTarget.Version), ["a", "b", "c"], false, 3 },
        { "ascend by version: ties keep key order", Req(order: RangeRequest.Types.SortOrder.Ascend, target: RangeRequest.Types.SortTarget.Version), ["b", "c", "a"], false, 3 },
        { "descend by value (bytes)", Req(order: RangeRequest.Types.SortOrder.Descend, target: RangeRequest.Types.SortTarget.Value), ["a", "c", "b"], false, 3 },
        { "min mod revision filter, count unfiltered", Req(minMod: 4), ["a", "c"], false, 3 },
        { "max mod revision filter", Req(maxMod: 3), ["b"], false, 3 },
        { "min create revision filter", Req(minCreate: 3), ["b", "c"], false, 3 },
        { "max create revision filter with limit", Req(maxCreate: 3, limit: 1), ["a"], true, 3 },
        { "single key", new RangeRequest { Key = Bytes("b") }, ["b"], false, 1 },
        { "prefix range [a, b)", new RangeRequest { Key = Bytes("a"), RangeEnd = Bytes("b") }, ["a"], false, 1 },
        { "from key b (range_end \\0)", new RangeRequest { Key = Bytes("b"), RangeEnd = Google.Protobuf.ByteString.CopyFrom(0) }, ["b", "c"], false, 2 },
        { "missing key", new RangeRequest { Key = Bytes("zz") }, [], false, 0 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Range_follows_etcd(string name, RangeRequest request, string[] keys, bool more, long count)
    {
        var response = _f.Range(request);
        response.Kvs.Select(kv => kv.Key.ToStringUtf8()).Should().Equal(keys, name);
        response.More.Should().Be(more, name);
        response.Count.Should().Be(count, name);
        response.Header.Revision.Should().Be(5);
    }

    [Fact]
    public void Keys_only_strips_values_and_count_only_returns_no_kvs()
    {
        var keysOnly = _f.Range(Req(keysOnly: true));
        keysOnly.Kvs.Should().HaveCount(3).And.OnlyContain(kv => kv.Value.IsEmpty);

        var countOnly = _f.Range(Req(countOnly: true));
        countOnly.Kvs.Should().BeEmpty();
        countOnly.Count.Should().Be(3);
    }

    [Fact]
    public void Keys_only_with_value_sort_still_sorts_by_value()
    {
        var response = _f.Range(Req(keysOnly: true, order: RangeRequest.Types.SortOrder.Ascend, target: RangeRequest.Types.SortTarget.Value));
        response.Kvs.Select(kv => kv.Key.ToStringUtf8()).Should().Equal("b", "c", "a");
        response.Kvs.Should().OnlyContain(kv => kv.Value.IsEmpty);
    }

    [Fact]
    public void Reads_at_an_old_revision_and_errors_for_future_and_compacted()
    {
        var old = _f.Range(new RangeRequest { Key = Bytes("a"), Revision = 2 });
        old.Kvs.Single().Value.ToStringUtf8().Should().Be("1");
        old.Header.Revision.Should().Be(5, "the header carries the current revision");

        var (_, future) = KvStore.Server.Apply.RangeExecutor.Execute(_f.Store, new RangeRequest { Key = Bytes("a"), Revision = 6 });
        future.Should().Be(EtcdErrors.FutureRevision);

        _f.Apply(new KvStore.Internal.InternalRequest { Compaction = new CompactionRequest { Revision = 4 } }).Error.Should().BeNull();
        var (_, compacted) = KvStore.Server.Apply.RangeExecutor.Execute(_f.Store, new RangeRequest { Key = Bytes("a"), Revision = 3 });
        compacted.Should().Be(EtcdErrors.Compacted);
    }

    public void Dispose() => _f.Dispose();

    private static RangeRequest Req(
        long limit = 0,
        RangeRequest.Types.SortOrder order = RangeRequest.Types.SortOrder.None,
        RangeRequest.Types.SortTarget target = RangeRequest.Types.SortTarget.Key,
        long minMod = 0,
        long maxMod = 0,
        long minCreate = 0,
        long maxCreate = 0,
        bool keysOnly = false,
        bool countOnly = false) => new()
    {
        Key = Bytes("a"),
        RangeEnd = Bytes("z"),
        Limit = limit,
        SortOrder = order,
        SortTarget = target,
        MinModRevision = minMod,
        MaxModRevision = maxMod,
        MinCreateRevision = minCreate,
        MaxCreateRevision = maxCreate,
        KeysOnly = keysOnly,
        CountOnly = countOnly,
    };
}
