using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>etcd's Status sizes (dbSize &gt;= dbSizeInUse, never 0) and Compact(0) on a never-compacted store.</summary>
public sealed class DbSizeAndCompactZeroTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private MvccStore Open() => MvccStore.Open(
        new MvccStoreOptions { DataDirectory = _tmp.Sub("kv"), IndexBuckets = 1 << 10, PageSizeBits = 14, MemorySizeBits = 18, SegmentSizeBits = 16 },
        NullLogger.Instance);

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public void A_fresh_store_reports_a_db_size_that_is_not_zero_and_covers_what_is_in_use()
    {
        using var store = Open();
        store.DbSizeInUseBytes.Should().BeGreaterThan(0, "etcd's dbSizeInUse is never 0");
        store.DbSizeBytes.Should().BeGreaterThan(0, "etcd's dbSize is never 0 (the tail page of the log is allocated)");
        store.DbSizeBytes.Should().BeGreaterThanOrEqualTo(store.DbSizeInUseBytes);

        for (var i = 0; i < 50; i++)
        {
            using var txn = store.BeginWrite((ulong)i + 1);
            txn.Put(B($"k{i}"), B(new string('v', 500)), 0);
            txn.Commit();
        }

        // Nothing flushed to a segment file yet: the in-memory log tail still counts.
        store.DbSizeBytes.Should().BeGreaterThanOrEqualTo(store.DbSizeInUseBytes);
        store.DbSizeBytes.Should().BeGreaterThan(50 * 500);
        store.Checkpoint();
        store.DbSizeBytes.Should().BeGreaterThanOrEqualTo(store.DbSizeInUseBytes);
    }

    [Fact]
    public void Compacting_at_zero_succeeds_until_the_first_real_compaction()
    {
        using var store = Open();
        store.Compact(0).Error.Should().Be(MvccError.None, "etcd's compactMainRev starts at -1");
        store.CompactRevision.Should().Be(0);

        for (var i = 0; i < 3; i++)
        {
            using var txn = store.BeginWrite((ulong)i + 1);
            txn.Put(B("k"), B($"v{i}"), 0);
            txn.Commit();
        }

        store.Compact(0).Error.Should().Be(MvccError.None);
        store.Compact(2).Error.Should().Be(MvccError.None);
        store.Compact(0).Error.Should().Be(MvccError.Compacted);
        store.Compact(2).Error.Should().Be(MvccError.Compacted);
        store.Compact(99).Error.Should().Be(MvccError.FutureRevision);
    }
}
