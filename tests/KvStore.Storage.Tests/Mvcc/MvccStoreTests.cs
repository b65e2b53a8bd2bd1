using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

public sealed class MvccStoreTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private MvccStore _store;
    private ulong _index;

    public MvccStoreTests() => _store = Open();

    public void Dispose()
    {
        _store.Dispose();
        _tmp.Dispose();
    }

    private MvccStore Open() => MvccStore.Open(new MvccStoreOptions { DataDirectory = _tmp.Sub("db"), MemorySizeBits = 24, PageSizeBits = 16, IndexBuckets = 1 << 10 }, NullLogger.Instance);

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    private static string S(byte[] b) => Encoding.UTF8.GetString(b);

    private void Put(string key, string value, long lease = 0)
    {
        using var txn = _store.BeginWrite(++_index);
        txn.Put(B(key), B(value), lease);
        txn.Commit();
    }

    private int Del(string key, string end = "")
    {
        using var txn = _store.BeginWrite(++_index);
        var n = txn.DeleteRange(B(key), B(end)).Count;
        txn.Commit();
        return n;
    }

    private string[] Get(string key, string end = "", RangeOptions options = default) =>
        _store.Range(B(key), B(end), options).Kvs.Select(kv => $"{S(kv.Key)}={S(kv.Value)}@c{kv.CreateRevision}m{kv.ModRevision}v{kv.Version}").ToArray();

    private void Reopen()
    {
        _store.Dispose();
        _store = Open();
    }

    private void CrashAndReopen()
    {
        _store.CloseWithoutCheckpoint();
        _store = Open();
    }

    [Fact]
    public void Fresh_store_is_at_revision_1_and_first_put_gets_2()
    {
        _store.CurrentRevision.Should().Be(1);
        Put("a", "1");
        _store.CurrentRevision.Should().Be(2);
        Get("a").Should().Equal("a=1@c2m2v1");
    }

    [Fact]
    public void Create_mod_revision_and_version_follow_generations()
    {
        Put("k", "1");   // rev 2
        Put("k", "2");   // rev 3
        Del("k");        // rev 4
        Get("k").Should().BeEmpty();
        Put("k", "3");   // rev 5: new generation
        Get("k").Should().Equal("k=3@c5m5v1");
        Get("k", options: new RangeOptions(Revision: 3)).Should().Equal("k=2@c2m3v2");
        Get("k", options: new RangeOptions(Revision: 2)).Should().Equal("k=1@c2m2v1");
        Get("k", options: new RangeOptions(Revision: 4)).Should().BeEmpty();
    }

    public static TheoryData<string, string, string[]> RangeCases => new()
    {
        { "b", "", ["b"] },
        { "b", "\0", ["b", "b/1", "b/2", "c"] },
        { "", "\0", ["a", "b", "b/1", "b/2", "c"] },
        { "b/", "b0", ["b/1", "b/2"] },
        { "a", "c", ["a", "b", "b/1", "b/2"] },
        { "c", "a", [] },
        { "zz", "\0", [] },
        { "x", "", [] },
    };

    [Theory]
    [MemberData(nameof(RangeCases))]
    public void Range_follows_etcd_end_rules(string key, string end, string[] expected)
    {
        foreach (var k in new[] { "c", "a", "b/2", "b", "b/1" })
        {
            Put(k, "v");
        }

        _store.Range(B(key), B(end), default).Kvs.Select(kv => S(kv.Key)).Should().Equal(expected);
    }

    [Fact]
    public void Limit_count_keys_only_and_count_only()
    {
        Put("a", "1");
        Put("b", "2");
        Put("c", "3");

        var limited = _store.Range(B("a"), B("\0"), new RangeOptions(Limit: 2));
        limited.Kvs.Select(kv => S(kv.Key)).Should().Equal("a", "b");
        limited.Count.Should().Be(3);
        limited.Revision.Should().Be(4);

        var keysOnly = _store.Range(B("a"), B("\0"), new RangeOptions(KeysOnly: true));
        keysOnly.Kvs.Should().OnlyContain(kv => kv.Value.Length == 0 && kv.ModRevision > 0);

        var countOnly = _store.Range(B("a"), B("\0"), new RangeOptions(CountOnly: true));
        countOnly.Kvs.Should().BeEmpty();
        countOnly.Count.Should().Be(3);
    }

    [Fact]
    public void Put_takes_version_and_create_revision_from_the_key_index_and_returns_the_previous_lease()
    {
        Put("k", "0", lease: 5); // revision 2
        using (var txn = _store.BeginWrite(++_index))
        {
            txn.Put(B("k"), B("1"), 6).Should().Be(5);
            txn.Put(B("k"), B("2"), 0).Should().Be(6, "the txn's own earlier put is the previous one");
            txn.Commit();
        }

        var kv = _store.Range(B("k"), [], default).Kvs.Single();
        (kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease).Should().Be((2L, 3L, 3L, 0L));

        Reopen();
        Del("k"); // revision 4
        using (var txn = _store.BeginWrite(++_index))
        {
            txn.Put(B("k"), B("again"), 0).Should().Be(0, "a deleted key has no lease");
            txn.Commit();
        }

        kv = _store.Range(B("k"), [], default).Kvs.Single();
        (kv.CreateRevision, kv.ModRevision, kv.Version).Should().Be((5L, 5L, 1L));
    }

    [Fact]
    public void Txn_sees_own_writes_and_uses_one_revision_with_sub_revisions()
    {
        Put("a", "0");
        using (var txn = _store.BeginWrite(++_index))
        {
            txn.Revision.Should().Be(3);
            txn.Put(B("a"), B("1"), 0).Should().Be(0);
            txn.Put(B("b"), B("2"), 7).Should().Be(0);
            txn.Range(B("a"), B("\0"), default).Kvs.Select(kv => S(kv.Value)).Should().Equal("1", "2");
            _store.Range(B("a"), B("\0"), default).Kvs.Select(kv => S(kv.Value)).Should().Equal("0");
            txn.DeleteRange(B("a"), []).Select(kv => S(kv.Value)).Should().Equal("1");
            txn.Changes.Select(c => c.Type).Should().Equal(EventType.Put, EventType.Put, EventType.Delete);
            txn.Commit();
        }

        _store.CurrentRevision.Should().Be(3);
        Get("a", "\0").Should().Equal("b=2@c3m3v1");
        _store.Range(B("b"), [], default).Kvs[0].Lease.Should().Be(7);
    }

    [Fact]
    public void Txn_without_changes_does_not_bump_revision_but_records_index()
    {
        Put("a", "0");
        using (var txn = _store.BeginWrite(42))
        {
            txn.Range(B("a"), [], default).Count.Should().Be(1);
            txn.DeleteRange(B("missing"), []).Should().BeEmpty();
            txn.Commit();
        }

        _store.CurrentRevision.Should().Be(2);
        _store.ConsistentIndex.Should().Be(42);
    }

    [Fact]
    public async Task Compaction_errors_and_what_remains()
    {
        Put("a", "1"); // 2
        Put("a", "2"); // 3
        Put("b", "1"); // 4
        Del("b");      // 5
        Put("c", "1"); // 6

        _store.Compact(7).Error.Should().Be(MvccError.FutureRevision);
        _store.Compact(5).Error.Should().Be(MvccError.None);
        _store.Compact(5).Error.Should().Be(MvccError.Compacted);
        _store.Compact(4).Error.Should().Be(MvccError.Compacted);
        _store.CompactRevision.Should().Be(5);
        await _store.PhysicalCompactionDone(5);

        _store.Range(B("a"), [], new RangeOptions(Revision: 4)).Error.Should().Be(MvccError.Compacted);
        _store.Range(B("a"), [], new RangeOptions(Revision: 9)).Error.Should().Be(MvccError.FutureRevision);
        Get("a", "\0", new RangeOptions(Revision: 5)).Should().Equal("a=2@c2m3v2");
        Get("a", "\0").Should().Equal("a=2@c2m3v2", "c=1@c6m6v1");

        // Only a@3 (latest at or below 5) and revisions above 5 remain; b's whole generation is gone.
        _store.ReadEvents([], B("\0"), 1, 0, 0).Select(e => $"{e.Type}:{S(e.Kv.Key)}@{e.Kv.ModRevision}")
            .Should().Equal("Put:a@3", "Put:c@6");

        Reopen();
        _store.CompactRevision.Should().Be(5);
        Get("a", "\0").Should().Equal("a=2@c2m3v2", "c=1@c6m6v1");
        Put("a", "3");
        Get("a").Should().Equal("a=3@c2m7v3");
    }

    [Fact]
    public void Checkpoint_then_reopen_restores_data_index_and_meta()
    {
        Put("a", "1");
        Put("b", "2");
        Del("a");
        using (var txn = _store.BeginWrite(++_index))
        {
            txn.PutMeta("lease", B("1"), B("ttl=5"));
            txn.PutMeta("lease", B("2"), B("ttl=9"));
            txn.DeleteMeta("lease", B("2"));
            txn.Commit();
        }

        _store.Checkpoint();
        Put("after", "checkpoint"); // not in the checkpoint: replayed from the WAL by the server

        CrashAndReopen();

        _store.ConsistentIndex.Should().Be(4);
        _store.CurrentRevision.Should().Be(4);
        Get("", "\0").Should().Equal("b=2@c3m3v1");
        Get("a", options: new RangeOptions(Revision: 3)).Should().Equal("a=1@c2m2v1");
        _store.ReadMeta("lease").Select(kv => $"{S(kv.Key)}={S(kv.Value)}").Should().Equal("1=ttl=5");

        using (var replayed = _store.BeginWrite(4))
        {
            replayed.IsAlreadyApplied.Should().BeTrue();
            var put = () => replayed.Put(B("x"), B("y"), 0);
            put.Should().Throw<InvalidOperationException>();
        }

        using (var next = _store.BeginWrite(5))
        {
            next.IsAlreadyApplied.Should().BeFalse();
            next.Put(B("after"), B("checkpoint"), 0);
            next.Commit();
        }

        _store.CurrentRevision.Should().Be(5);
    }

    [Fact]
    public void Corrupt_checkpoint_fails_open_naming_the_file()
    {
        Put("a", "1");
        _store.Checkpoint();
        _store.CloseWithoutCheckpoint();
        var dir = _tmp.Sub("db");
        foreach (var file in Directory.EnumerateFiles(Path.Combine(dir, "checkpoints"), "*", SearchOption.AllDirectories))
        {
            File.WriteAllBytes(file, new byte[16]);
        }

        var open = Open;
        open.Should().Throw<InvalidDataException>().WithMessage($"*{Path.Combine(dir, "checkpoints")}*");
        _store = MvccStore.Open(new MvccStoreOptions { DataDirectory = _tmp.Sub("other") }, NullLogger.Instance);
    }

    [Fact]
    public void Read_events_orders_by_revision_and_filters_range()
    {
        Put("a", "1");
        Put("b", "1");
        Del("a");
        Put("a/x", "2");

        _store.ReadEvents(B("a"), B("b"), 3, 0, 0).Select(e => $"{e.Type}:{S(e.Kv.Key)}@{e.Kv.ModRevision}")
            .Should().Equal("Delete:a@4", "Put:a/x@5");
        _store.ReadEvents(B("a"), B("\0"), 1, 0, 2).Should().HaveCount(2);
    }

    [Fact]
    public async Task Concurrent_readers_never_see_half_applied_txns()
    {
        for (var i = 0; i < 10; i++)
        {
            Put($"k{i}", "0");
        }

        using var cts = new CancellationTokenSource();
        var readers = Enumerable.Range(0, 3).Select(_ => Task.Run(() =>
        {
            var bad = 0;
            while (!cts.IsCancellationRequested)
            {
                var values = _store.Range(B("k"), B("l"), default).Kvs.Select(kv => S(kv.Value)).Distinct().Count();
                if (values != 1)
                {
                    bad++;
                }
            }

            return bad;
        })).ToArray();

        for (var round = 1; round <= 200; round++)
        {
            using var txn = _store.BeginWrite(++_index);
            for (var i = 0; i < 10; i++)
            {
                txn.Put(B($"k{i}"), B(round.ToString(System.Globalization.CultureInfo.InvariantCulture)), 0);
            }

            txn.Commit();
        }

        cts.Cancel();
        (await Task.WhenAll(readers)).Sum().Should().Be(0);
    }
}
