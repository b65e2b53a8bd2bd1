using System.Text;
using KvStore.Storage.Mvcc;
using KvStore.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>Log compaction gives disk space back without ever losing live data, whatever the crash point.</summary>
public sealed class SpaceReclamationTests : IDisposable
{
    private const int Keys = 8;
    private const int Rounds = 120;
    private readonly TempDir _tmp = new();
    private ulong _index;

    public void Dispose() => _tmp.Dispose();

    // Small pages and 64 KiB segments so a few MiB of history spans many segment files.
    private static MvccStoreOptions Options(string dir, long minBytes = long.MaxValue / 4) => new()
    {
        DataDirectory = dir,
        IndexBuckets = 1 << 10,
        PageSizeBits = 14,
        MemorySizeBits = 18,
        SegmentSizeBits = 16,
        LogCompactionMinBytes = minBytes,
    };

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    private static string Value(int key, int round) => $"k{key}-r{round}-" + new string((char)('a' + (round % 26)), 2000);

    /// <summary>Rounds x Keys puts of 2 KB values (about 2 MB of history), a few meta entries, a deleted key.</summary>
    private void Fill(MvccStore store)
    {
        for (var round = 0; round < Rounds; round++)
        {
            using var txn = store.BeginWrite(++_index);
            for (var k = 0; k < Keys; k++)
            {
                txn.Put(B($"key/{k}"), B(Value(k, round)), 0);
            }

            txn.PutMeta("lease", B($"l{round % 3}"), B($"ttl{round}"));
            txn.Commit();
        }

        using (var txn = store.BeginWrite(++_index))
        {
            txn.Put(B("gone"), B("x"), 0);
            txn.Commit();
        }

        using (var txn = store.BeginWrite(++_index))
        {
            txn.DeleteRange(B("gone"), []);
            txn.Commit();
        }
    }

    private static string Dump(MvccStore store) => string.Join(
        "\n",
        store.Range(B("\0"), B("\0"), default).Kvs.Select(kv => $"{Encoding.UTF8.GetString(kv.Key)}={kv.Value.Length}:{Encoding.UTF8.GetString(kv.Value, 0, Math.Min(12, kv.Value.Length))}@c{kv.CreateRevision}m{kv.ModRevision}v{kv.Version}"))
        + "\nmeta:" + string.Join(",", store.ReadMeta("lease").Select(m => Encoding.UTF8.GetString(m.Key) + "=" + Encoding.UTF8.GetString(m.Value)))
        + $"\nrev {store.CurrentRevision} compact {store.CompactRevision} ci {store.ConsistentIndex}";

    [Fact]
    public async Task Compact_then_defragment_gives_space_back_and_keeps_live_data()
    {
        var dir = _tmp.Sub("db");
        string expected;
        long before, after;
        var store = MvccStore.Open(Options(dir), NullLogger.Instance);
        try
        {
            Fill(store);
            store.Checkpoint();
            before = store.DbSizeBytes;
            var hashBefore = store.HashKV(0);

            store.Compact(store.CurrentRevision).Error.Should().Be(MvccError.None);
            await store.PhysicalCompactionDone(store.CompactRevision);
            store.DbSizeBytes.Should().BeGreaterThanOrEqualTo(before, "deletes alone never shrink an append-only log");

            await store.DefragmentAsync();
            after = store.DbSizeBytes;
            expected = Dump(store);
            store.LogCompactions.Should().Be(1);

            // The live state did not change: same keys and values, and the hash at the current revision is the one
            // etcd would compute after compaction (a compacted store hashes only what it keeps).
            store.Range(B("key/"), B("key0"), default).Kvs.Should().HaveCount(Keys);
            store.HashKV(0).Revision.Should().Be(hashBefore.Revision);
        }
        finally
        {
            store.Dispose();
        }

        // ~2.3 MB of history (36 segment files of 64 KiB) -> the live 8 x 2 KB values in the last two segments plus
        // the checkpoint (a 64 KiB hash index): about 140 KB.
        before.Should().BeGreaterThan(2_000_000);
        after.Should().BeLessThan(300_000, $"before {before}, after {after}");

        using var reopened = MvccStore.Open(Options(dir), NullLogger.Instance);
        Dump(reopened).Should().Be(expected);
        reopened.Range(B("key/3"), [], default).Kvs.Single().Value.Should().Equal(B(Value(3, Rounds - 1)));
        reopened.ReadMeta("lease").Should().HaveCount(3);
    }

    [Fact]
    public async Task Crash_after_log_compaction_before_its_checkpoint_recovers_the_previous_checkpoint_intact()
    {
        var dir = _tmp.Sub("db");
        var store = MvccStore.Open(Options(dir), NullLogger.Instance);
        Fill(store);
        store.Checkpoint();
        var atCheckpoint = Dump(store);
        var filesAtCheckpoint = Directory.GetFiles(dir, "kv.log.*").Length;

        store.Compact(store.CurrentRevision);
        await store.PhysicalCompactionDone(store.CompactRevision);

        // Crash image 1: begin address moved in memory, copies appended, no checkpoint yet.
        store.CompactLogForTest();
        CrashImage.Copy(dir, _tmp.Sub("crash1"));
        Directory.GetFiles(dir, "kv.log.*").Length.Should().BeGreaterThanOrEqualTo(filesAtCheckpoint, "no segment may go before a checkpoint records the new begin address");

        // Crash image 2: after the checkpoint that records the new begin address (and after the old segments went).
        store.CheckpointAfterCompactionForTest();
        var atSecondCheckpoint = Dump(store);
        CrashImage.Copy(dir, _tmp.Sub("crash2"));
        store.CloseWithoutCheckpoint();

        using (var crash1 = MvccStore.Open(Options(_tmp.Sub("crash1")), NullLogger.Instance))
        {
            // The compaction itself was after the checkpoint: in a real member the WAL replays it.
            Dump(crash1).Should().Be(atCheckpoint);
        }

        using (var crash2 = MvccStore.Open(Options(_tmp.Sub("crash2")), NullLogger.Instance))
        {
            Dump(crash2).Should().Be(atSecondCheckpoint);
            crash2.Range(B("key/"), B("key0"), new RangeOptions(Revision: crash2.CompactRevision)).Kvs.Should().HaveCount(Keys);
        }

        using var last = MvccStore.Open(Options(dir), NullLogger.Instance);
        Dump(last).Should().Be(atSecondCheckpoint);
    }

    [Fact]
    public async Task Writes_after_compaction_and_crash_without_final_checkpoint_keep_checkpointed_state()
    {
        var dir = _tmp.Sub("db");
        var store = MvccStore.Open(Options(dir), NullLogger.Instance);
        Fill(store);
        store.Compact(store.CurrentRevision);
        await store.DefragmentAsync();
        using (var txn = store.BeginWrite(++_index))
        {
            txn.Put(B("key/0"), B("after-defrag"), 0);
            txn.Commit();
        }

        store.Checkpoint();
        var expected = Dump(store);
        using (var txn = store.BeginWrite(++_index))
        {
            txn.Put(B("key/1"), B("not-checkpointed"), 0);
            txn.Commit();
        }

        store.CloseWithoutCheckpoint();
        using var reopened = MvccStore.Open(Options(dir), NullLogger.Instance);
        Dump(reopened).Should().Be(expected);
        reopened.ConsistentIndex.Should().Be(_index - 1, "the WAL replays the last entry");
    }

    [Fact]
    public async Task Background_log_compaction_runs_after_physical_compaction_once_garbage_dominates()
    {
        var dir = _tmp.Sub("db");
        using var store = MvccStore.Open(Options(dir, minBytes: 256 << 10), NullLogger.Instance);
        Fill(store);
        store.Checkpoint();
        var before = store.DbSizeBytes;
        store.Compact(store.CurrentRevision);
        await store.PhysicalCompactionDone(store.CompactRevision);
        store.LogCompactions.Should().Be(1);
        before.Should().BeGreaterThan(2_000_000);
        store.DbSizeBytes.Should().BeLessThan(300_000);
        store.Range(B("key/"), B("key0"), default).Kvs.Should().HaveCount(Keys);
    }

    [Fact]
    public async Task Readers_and_writer_run_during_defragment()
    {
        var dir = _tmp.Sub("db");
        using var store = MvccStore.Open(Options(dir), NullLogger.Instance);
        Fill(store);
        store.Compact(store.CurrentRevision);
        await store.PhysicalCompactionDone(store.CompactRevision);
        using var stop = new CancellationTokenSource();
        var readers = Enumerable.Range(0, 3).Select(_ => Task.Run(() =>
        {
            var reads = 0;
            while (!stop.IsCancellationRequested || reads < 50)
            {
                store.Range(B("key/"), B("key0"), default).Kvs.Should().HaveCount(Keys);
                reads++;
            }
        })).ToArray();
        var writer = Task.Run(() =>
        {
            for (var i = 0; i < 200; i++)
            {
                using var txn = store.BeginWrite(Interlocked.Increment(ref _index));
                txn.Put(B($"key/{i % Keys}"), B($"w{i}"), 0);
                txn.Commit();
            }
        });
        await store.DefragmentAsync();
        await writer;
        await stop.CancelAsync();
        await Task.WhenAll(readers);
        store.Range(B("key/7"), [], default).Kvs.Single().Value.Should().Equal(B("w199"));
    }

    [Fact]
    public async Task Defragment_keeps_every_revision_of_more_keys_than_one_listing_chunk_while_a_writer_adds_keys_between_them()
    {
        // 10,000 keys, two revisions each: the live revisions are listed a few thousand keys at a time, and a key the
        // listing skipped would lose its records below the new begin address.
        const int Many = 10_000;
        var dir = _tmp.Sub("db");
        var store = MvccStore.Open(Options(dir), NullLogger.Instance);
        long firstRound = 0;
        string expected;
        try
        {
            for (var round = 0; round < 2; round++)
            {
                for (var k = 0; k < Many; k += 500)
                {
                    using var txn = store.BeginWrite(++_index);
                    for (var j = k; j < k + 500; j++)
                    {
                        txn.Put(B($"key/{j:D5}"), B($"r{round}-{j}"), 0);
                    }

                    txn.Commit();
                }

                firstRound = firstRound == 0 ? store.CurrentRevision : firstRound;
            }

            // Keys that sort between the listed ones, written while the defragment runs.
            var writer = Task.Run(() =>
            {
                for (var j = 0; j < Many; j += 7)
                {
                    using var txn = store.BeginWrite(Interlocked.Increment(ref _index));
                    txn.Put(B($"key/{j:D5}+"), B($"new-{j}"), 0);
                    txn.Commit();
                }
            });
            await store.DefragmentAsync();
            await writer;
            store.LogCompactions.Should().Be(1);
            expected = Dump(store);
        }
        finally
        {
            store.Dispose();
        }

        using var reopened = MvccStore.Open(Options(dir), NullLogger.Instance);
        Dump(reopened).Should().Be(expected);
        var old = reopened.Range(B("key/"), B("key0"), new RangeOptions { Revision = firstRound }).Kvs;
        old.Select(kv => Encoding.UTF8.GetString(kv.Value)).Should().Equal(Enumerable.Range(0, Many).Select(j => $"r0-{j}"), "every key's first revision survives the defragment");
        reopened.Range(B("key/"), B("key0"), default).Kvs.Should().HaveCount(Many + ((Many + 6) / 7));
    }
}
