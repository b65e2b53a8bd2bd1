using System.Collections.Concurrent;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// FASTER creates each checkpoint's directories and files, and new data log segments, without syncing the parent
/// directories. Once a checkpoint returns the raft log may be truncated behind it, so by then every name it needs
/// must be durable: each directory under the checkpoint directory, the checkpoint directory and the data directory
/// are fsynced after the checkpoint (plain, index-only and the defragment's log checkpoint alike).
/// </summary>
public sealed class CheckpointNamesDurableTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose()
    {
        NativeFile.SyncedForTest = null;
        _tmp.Dispose();
    }

    [Fact]
    public async Task Every_directory_a_checkpoint_needs_is_synced_before_it_counts_as_taken()
    {
        var dir = Path.GetFullPath(_tmp.Sub("kv"));
        using var store = MvccStore.Open(
            new MvccStoreOptions { DataDirectory = dir, MemorySizeBits = 18, PageSizeBits = 12, SegmentSizeBits = 16, IndexBuckets = 1 << 10 },
            NullLogger.Instance);
        var synced = new ConcurrentQueue<string>();
        NativeFile.SyncedForTest = d =>
        {
            // Other tests run beside this one: only this store's directories count.
            var full = Path.GetFullPath(d);
            if (full.StartsWith(dir, StringComparison.Ordinal))
            {
                synced.Enqueue(full);
            }
        };
        for (var i = 1; i <= 300; i++)
        {
            CheckpointDamageSweepTests.Write(store, i); // ~40 KiB of log: a few 64 KiB segments, created as the log grows
        }

        store.Checkpoint();
        AssertEveryNameSynced(dir, synced.ToArray(), "after a checkpoint");

        synced.Clear();
        for (var i = 301; i <= 400; i++)
        {
            CheckpointDamageSweepTests.Write(store, i);
        }

        await store.DefragmentAsync(); // an index checkpoint, then a log checkpoint that completes after its version switch
        AssertEveryNameSynced(dir, synced.ToArray(), "after a defragmentation");
    }

    private static void AssertEveryNameSynced(string dataDir, string[] synced, string when)
    {
        var checkpoints = Path.Combine(dataDir, "checkpoints");
        var needed = Directory.GetDirectories(checkpoints, "*", SearchOption.AllDirectories).Append(checkpoints).Append(dataDir).ToList();
        needed.Should().HaveCountGreaterThan(4, "the checkpoint made its own directories");
        synced.Should().Contain(needed, "every directory holding a name the checkpoint needs is synced {0}", when);
        synced.Should().EndWith([checkpoints, dataDir], "parents after their children, the data directory (segment files) last");
    }
}
