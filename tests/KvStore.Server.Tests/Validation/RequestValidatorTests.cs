using Etcdserverpb;
using Grpc.Core;
using KvStore.Server.Api;
using static KvStore.Server.Tests.Apply.ApplierFixture;

namespace KvStore.Server.Tests.Validation;

/// <summary>Requests rejected before they are proposed, with etcd's codes and messages.</summary>
public sealed class RequestValidatorTests
{
    public static TheoryData<string, TxnRequest, EtcdError?> TxnCases => new()
    {
        { "empty txn is fine", new TxnRequest(), null },
        { "3 ops with max 3 is fine", Txn(Put("a"), Put("b"), Put("c")), null },
        { "4 ops with max 3", Txn(Put("a"), Put("b"), Put("c"), Put("d")), EtcdErrors.TooManyOps },
        { "duplicate put", Txn(Put("a"), Put("a")), EtcdErrors.DuplicateKey },
        { "put inside a deleted range", Txn(Del("a", "c"), Put("b")), EtcdErrors.DuplicateKey },
        { "put next to a single-key delete of another key", Txn(Del("a"), Put("b")), null },
        { "put and delete of the same key", Txn(Put("a"), Del("a")), EtcdErrors.DuplicateKey },
        { "two reads of one key are fine", Txn(Get("a"), Get("a")), null },
        { "then/else of a nested txn may put the same key", Txn(Nested(Txn(Put("a")), Txn(Put("a")))), null },
        { "nested put clashing with an outer put", Txn(Put("a"), Nested(Txn(Put("a")), new TxnRequest())), EtcdErrors.DuplicateKey },
        { "empty key in a put", Txn(Put(string.Empty)), EtcdErrors.EmptyKey },
        { "empty op", Txn(new RequestOp()), EtcdErrors.KeyNotFound },
        { "ignore_value with a value", Txn(new RequestOp { RequestPut = new PutRequest { Key = Bytes("a"), Value = Bytes("v"), IgnoreValue = true } }), EtcdErrors.ValueProvided },
    };

    [Theory]
    [MemberData(nameof(TxnCases))]
    public void Txn_checks(string name, TxnRequest request, EtcdError? expected) =>
        RequestValidator.Check(request, maxTxnOps: 3).Should().Be(expected, name);

    [Fact]
    public void Put_checks()
    {
        RequestValidator.Check(new PutRequest()).Should().Be(EtcdErrors.EmptyKey);
        RequestValidator.Check(new PutRequest { Key = Bytes("k"), IgnoreLease = true, Lease = 5 }).Should().Be(EtcdErrors.LeaseProvided);
        RequestValidator.Check(new PutRequest { Key = Bytes("k"), IgnoreValue = true }).Should().BeNull();
        RequestValidator.Check(new RangeRequest()).Should().Be(EtcdErrors.EmptyKey);
        RequestValidator.Check(new DeleteRangeRequest()).Should().Be(EtcdErrors.EmptyKey);
    }

    [Theory]
    [InlineData(nameof(EtcdErrors.EmptyKey), StatusCode.InvalidArgument, "etcdserver: key is not provided")]
    [InlineData(nameof(EtcdErrors.TooManyOps), StatusCode.InvalidArgument, "etcdserver: too many operations in txn request")]
    [InlineData(nameof(EtcdErrors.DuplicateKey), StatusCode.InvalidArgument, "etcdserver: duplicate key given in txn request")]
    [InlineData(nameof(EtcdErrors.RequestTooLarge), StatusCode.InvalidArgument, "etcdserver: request is too large")]
    [InlineData(nameof(EtcdErrors.TooManyRequests), StatusCode.ResourceExhausted, "etcdserver: too many requests")]
    [InlineData(nameof(EtcdErrors.Compacted), StatusCode.OutOfRange, "etcdserver: mvcc: required revision has been compacted")]
    [InlineData(nameof(EtcdErrors.FutureRevision), StatusCode.OutOfRange, "etcdserver: mvcc: required revision is a future revision")]
    [InlineData(nameof(EtcdErrors.NoSpace), StatusCode.ResourceExhausted, "etcdserver: mvcc: database space exceeded")]
    [InlineData(nameof(EtcdErrors.LeaseNotFound), StatusCode.NotFound, "etcdserver: requested lease not found")]
    [InlineData(nameof(EtcdErrors.ValueProvided), StatusCode.InvalidArgument, "etcdserver: value is provided")]
    [InlineData(nameof(EtcdErrors.LeaseProvided), StatusCode.InvalidArgument, "etcdserver: lease is provided")]
    [InlineData(nameof(EtcdErrors.NoLeader), StatusCode.Unavailable, "etcdserver: no leader")]
    public void Errors_carry_etcds_code_and_message(string name, StatusCode code, string message)
    {
        var error = (EtcdError)typeof(EtcdErrors).GetField(name)!.GetValue(null)!;
        var exception = error.Exception();
        exception.StatusCode.Should().Be(code);
        exception.Status.Detail.Should().Be(message);
    }

    private static TxnRequest Txn(params RequestOp[] ops)
    {
        var txn = new TxnRequest();
        txn.Success.AddRange(ops);
        return txn;
    }

    private static RequestOp Nested(TxnRequest then, TxnRequest otherwise)
    {
        var txn = new TxnRequest();
        txn.Success.AddRange(then.Success);
        txn.Failure.AddRange(otherwise.Success);
        return new RequestOp { RequestTxn = txn };
    }

    private static RequestOp Get(string key) => new() { RequestRange = new RangeRequest { Key = Bytes(key) } };

    private static RequestOp Put(string key) => new() { RequestPut = new PutRequest { Key = Bytes(key), Value = Bytes("v") } };

    private static RequestOp Del(string key, string rangeEnd = "") =>
        new() { RequestDeleteRange = new DeleteRangeRequest { Key = Bytes(key), RangeEnd = Bytes(rangeEnd) } };
}
