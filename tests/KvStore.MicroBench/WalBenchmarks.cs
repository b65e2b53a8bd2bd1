using BenchmarkDotNet.Attributes;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.MicroBench;

/// <summary>
/// The write-ahead log as the Raft loop uses it: entries appended, then one fsync before anything is acknowledged.
/// One entry per sync is a single sequential client; 64 per sync is what group commit gives under load.
/// </summary>
[MemoryDiagnoser]
public class WalBenchmarks
{
    private readonly byte[] _payload = new byte[256];
    private string _dir = string.Empty;
    private WriteAheadLog _wal = null!;
    private ulong _index;

    [Params(1, 64)]
    public int EntriesPerSync { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "kvstore-microbench-wal-" + Guid.NewGuid().ToString("N"));
        _wal = WriteAheadLog.Open(_dir, NullLogger.Instance);
        Random.Shared.NextBytes(_payload);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _wal.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark]
    public async Task AppendAndSync()
    {
        for (var i = 0; i < EntriesPerSync; i++)
        {
            _index++;
            _wal.Append(new WalEntry(_index, 1, 0, _payload));
        }

        _wal.Append(new WalHardState(1, 1, _index));
        await _wal.SyncAsync();
        if (_index % 8192 < (ulong)EntriesPerSync)
        {
            // Keep the log small, as snapshots do for the server.
            _wal.ReleaseBefore(_index);
        }
    }
}
