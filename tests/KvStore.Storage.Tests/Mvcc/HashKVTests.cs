using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>Known answers recorded from real etcd 3.4 (Debian etcd-server) running the same script.</summary>
public sealed class HashKVTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private MvccStore _store;
    private ulong _index;

    public HashKVTests() => _store = Open();

    public void Dispose()
    {
        _store.Dispose();
        _tmp.Dispose();
    }

    private MvccStore Open() => MvccStore.Open(new MvccStoreOptions { DataDirectory = _tmp.Sub("db"), MemorySizeBits = 24, PageSizeBits = 16, IndexBuckets = 1 << 10 }, NullLogger.Instance);

    private void Put(string key, string value)
    {
        using var txn = _store.BeginWrite(++_index);
        txn.Put(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value), 0);
        txn.Commit();
    }

    private void Del(string key)
    {
        using var txn = _store.BeginWrite(++_index);
        txn.DeleteRange(Encoding.UTF8.GetBytes(key), []);
        txn.Commit();
    }

    private void Compact(long rev)
    {
        _store.Compact(rev).Error.Should().Be(MvccError.None);
        _store.PhysicalCompactionDone(rev).GetAwaiter().GetResult();
    }

    [Fact]
    public void Matches_etcd_3_4_bit_for_bit()
    {
        _store.HashKV(0).Should().Be(new HashKVResult(MvccError.None, 1084519789, -1, 1));

        Put("foo", "bar");
        Put("foo", "baz");
        Put("k1", "v1");
        Del("foo");
        Put("foo", "again");
        Put("lease-less", "");
        _store.HashKV(0).Should().Be(new HashKVResult(MvccError.None, 2496955007, -1, 7));
        _store.HashKV(4).Hash.Should().Be(2942447078);

        Compact(4);
        _store.HashKV(0).Should().Be(new HashKVResult(MvccError.None, 1556460548, 4, 7));

        Put("k1", "v2");
        _store.HashKV(0).Should().Be(new HashKVResult(MvccError.None, 4265617156, 4, 8));

        Del("k1");
        Compact(9);
        _store.HashKV(0).Should().Be(new HashKVResult(MvccError.None, 1881129905, 9, 9));
        _store.HashKV(9).Error.Should().Be(MvccError.Compacted);
        _store.HashKV(10).Error.Should().Be(MvccError.FutureRevision);

        Put("z", "zz");
        _store.HashKV(0).Hash.Should().Be(2824849794);

        // Stable across a checkpoint and reopen.
        _store.Checkpoint();
        _store.Dispose();
        _store = Open();
        _store.HashKV(0).Should().Be(new HashKVResult(MvccError.None, 2824849794, 9, 10));
        var (hash, compactRev, rev) = _store.HashKV(0);
        (hash, compactRev, rev).Should().Be((2824849794u, 9L, 10L));
    }
}
