using System.Text;
using BenchmarkDotNet.Attributes;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.MicroBench;

/// <summary>
/// The multi-version store as the apply loop and the read path use it: one put per write transaction over a working
/// set of 10,000 keys (each put a new revision of an existing key), a point read, and a 100-key prefix range.
/// </summary>
[MemoryDiagnoser]
public class MvccBenchmarks
{
    private const int Keys = 10_000;
    private readonly byte[][] _keys = new byte[Keys][];
    private readonly byte[] _value = new byte[256];
    private string _dir = string.Empty;
    private MvccStore _store = null!;
    private ulong _index;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "kvstore-microbench-mvcc-" + Guid.NewGuid().ToString("N"));
        _store = MvccStore.Open(new MvccStoreOptions { DataDirectory = _dir }, NullLogger.Instance);
        for (var i = 0; i < Keys; i++)
        {
            _keys[i] = Encoding.ASCII.GetBytes($"/registry/pods/ns{i / 100:D3}/pod{i % 100:D3}");
            using var txn = _store.BeginWrite(++_index);
            txn.Put(_keys[i], _value, 0);
            txn.Commit();
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark]
    public long Put()
    {
        using var txn = _store.BeginWrite(++_index);
        txn.Put(_keys[_next++ % Keys], _value, 0);
        txn.Commit();
        return txn.Revision;
    }

    [Benchmark]
    public int RangeOneKey() => _store.Range(_keys[_next++ % Keys], [], default).Kvs.Count;

    [Benchmark]
    public int RangePrefixOf100()
    {
        var ns = _next++ % (Keys / 100);
        return _store.Range(Encoding.ASCII.GetBytes($"/registry/pods/ns{ns:D3}/"), Encoding.ASCII.GetBytes($"/registry/pods/ns{ns:D3}0"), default).Kvs.Count;
    }
}
