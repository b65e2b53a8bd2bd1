using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// FasterKV's index checkpoint carries no checksum; the store records one per file after each checkpoint and checks it
/// before FasterKV reads the index, and falls back to comparing every key through the recovered index with the log when
/// the record is missing or unreadable. The open rebuilds the key index, leases included, from its one read of the log.
/// </summary>
public sealed class IndexChecksumTests : IDisposable
{
    private const int Keys = 200;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void A_checkpoint_records_the_checksums_of_its_index_files_and_an_undamaged_store_reopens_with_every_key()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);
        var token = Path.GetFileName(IndexCheckpointDir(dir));
        File.Exists(Path.Combine(dir, "checkpoints", "index-sums", token)).Should().BeTrue("the index checkpoint's checksums were recorded");
        Directory.EnumerateFiles(Path.Combine(dir, "checkpoints", "index-sums")).Should().ContainSingle("the records of removed index checkpoints are dropped");

        using var store = Open(dir);

        Values(store).Should().Equal(Expected());
    }

    [Fact]
    public void A_changed_byte_anywhere_in_the_hash_table_is_refused_naming_the_index_files()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);
        var table = HashTableFile(dir);
        var bytes = File.ReadAllBytes(table);
        // The last byte of the table: a bucket no key of this small store uses, so no read through the index would see it.
        bytes[^1] ^= 0x40;
        File.WriteAllBytes(table, bytes);

        var open = () => Open(dir).Dispose();

        open.Should().Throw<InvalidDataException>().WithMessage($"*index checkpoint in '{IndexCheckpointDir(dir)}' is corrupt*{table}*");
    }

    [Fact]
    public void Without_a_checksum_record_an_index_that_hides_keys_is_refused_by_the_key_by_key_check()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);
        Directory.Delete(Path.Combine(dir, "checkpoints", "index-sums"), recursive: true);
        var table = HashTableFile(dir);
        File.WriteAllBytes(table, new byte[new FileInfo(table).Length]); // every bucket empty

        var open = () => Open(dir).Dispose();

        open.Should().Throw<InvalidDataException>().WithMessage("*index checkpoint*is corrupt*misses the log's latest record*");
    }

    [Fact]
    public void A_damaged_checksum_record_falls_back_to_the_key_by_key_check_and_the_next_checkpoint_records_it_again()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);
        var record = Directory.EnumerateFiles(Path.Combine(dir, "checkpoints", "index-sums")).Single();
        var text = File.ReadAllText(record);
        File.WriteAllText(record, text.Replace(" ", "  ", StringComparison.Ordinal));

        using (var store = Open(dir))
        {
            Values(store).Should().Equal(Expected());
            using (var txn = store.BeginWrite(Keys + 1))
            {
                txn.Put(Encoding.UTF8.GetBytes("later"), Encoding.UTF8.GetBytes("v"), 0);
                txn.Commit();
            }

            store.Checkpoint();
        }

        var records = Directory.EnumerateDirectories(Path.Combine(dir, "checkpoints", "index-checkpoints"))
            .Select(d => File.ReadAllText(Path.Combine(dir, "checkpoints", "index-sums", Path.GetFileName(d))))
            .ToList();
        records.Should().Contain(r => r.Contains("ht.dat", StringComparison.Ordinal) && !r.Contains("  ", StringComparison.Ordinal), "the new index checkpoint has an intact record");

        using var reopened = Open(dir);
        Values(reopened).Should().HaveCount(Keys + 1);
    }

    [Fact]
    public void Keys_keep_the_lease_of_their_latest_put_across_a_reopen_and_a_compaction()
    {
        var dir = _tmp.Sub("db");
        ulong index = 0;
        using (var store = Open(dir))
        {
            void Write(Action<MvccWriteTxn> change)
            {
                using var txn = store.BeginWrite(++index);
                change(txn);
                txn.Commit();
            }

            Write(t => t.Put(Key("a"), Key("1"), 5));
            Write(t => t.Put(Key("b"), Key("1"), 7));
            Write(t => t.Put(Key("c"), Key("1"), 0));
            Write(t => t.Put(Key("b"), Key("2"), 0)); // b's latest put has no lease
            Write(t => t.Put(Key("d"), Key("1"), 9));
            Write(t => t.DeleteRange(Key("d"), [])); // d is gone
            Write(t => t.Put(Key("c"), Key("2"), 11)); // c's latest put has one
            Leased(store).Should().Equal("a=5", "c=11");
            store.Compact(store.CurrentRevision - 1);
        }

        using var reopened = Open(dir);

        Leased(reopened).Should().Equal("a=5", "c=11");
    }

    private static List<string> Leased(MvccStore store) =>
        store.LeasedKeys().Select(k => $"{Encoding.UTF8.GetString(k.Key)}={k.Lease}").Order(StringComparer.Ordinal).ToList();

    private static byte[] Key(string s) => Encoding.UTF8.GetBytes(s);

    // FasterKV's hash table file (ht.dat, with its device's segment suffix).
    private static string HashTableFile(string dir) =>
        Directory.EnumerateFiles(IndexCheckpointDir(dir)).Single(f => Path.GetFileName(f).StartsWith("ht.dat", StringComparison.Ordinal));

    private static string IndexCheckpointDir(string dir) =>
        Directory.EnumerateDirectories(Path.Combine(dir, "checkpoints", "index-checkpoints")).Single();

    private static void WriteAndClose(string dir)
    {
        using var store = Open(dir);
        for (var i = 1; i <= Keys; i++)
        {
            using var txn = store.BeginWrite((ulong)i);
            txn.Put(Encoding.UTF8.GetBytes($"k{i:D4}"), Encoding.UTF8.GetBytes($"v{i}"), 0);
            txn.Commit();
        }
    }

    private static List<string> Values(MvccStore store) =>
        store.Range([0], [0], new RangeOptions()).Kvs.Select(kv => $"{Encoding.UTF8.GetString(kv.Key)}={Encoding.UTF8.GetString(kv.Value)}").ToList();

    private static List<string> Expected() => Enumerable.Range(1, Keys).Select(i => $"k{i:D4}=v{i}").ToList();

    private static MvccStore Open(string dir) =>
        MvccStore.Open(new MvccStoreOptions { DataDirectory = dir, MemorySizeBits = 20, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8 }, NullLogger.Instance);
}
