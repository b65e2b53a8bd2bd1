using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// Each record of the store's data log carries a CRC-32C of its key and value, and the store's directory a format file:
/// a value damaged on disk, or a store from a version without checksums, stops the open with an error naming the file.
/// </summary>
public sealed class RecordChecksumTests : IDisposable
{
    private const string Value = "a-value-the-test-finds-in-the-data-log";
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void A_flipped_byte_inside_a_stored_value_is_refused_naming_the_data_log_file()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);
        var log = Path.Combine(dir, "kv.log.0");
        var bytes = File.ReadAllBytes(log);
        var at = bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(Value));
        at.Should().BeGreaterThan(0, "the value is in the data log");
        bytes[at + 5] ^= 0x01;
        File.WriteAllBytes(log, bytes);

        var open = () => Open(dir).Dispose();

        open.Should().Throw<InvalidDataException>().WithMessage($"*'{log}'*checksum*");
    }

    [Fact]
    public void An_undamaged_store_reopens_with_its_values()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);

        using var store = Open(dir);

        var kv = store.Range(Encoding.UTF8.GetBytes("k"), default, new RangeOptions()).Kvs.Single();
        Encoding.UTF8.GetString(kv.Value).Should().Be(Value);
        File.ReadAllText(Path.Combine(dir, "FORMAT")).Should().StartWith("kvstore-store 2");
    }

    [Fact]
    public void A_store_without_the_format_file_is_refused_as_written_by_an_earlier_version()
    {
        var dir = _tmp.Sub("db");
        WriteAndClose(dir);
        File.Delete(Path.Combine(dir, "FORMAT"));

        var open = () => Open(dir).Dispose();

        open.Should().Throw<InvalidDataException>().WithMessage($"*'{dir}'*no 'FORMAT' file*earlier KvStore version*snapshot*");
    }

    private static void WriteAndClose(string dir)
    {
        using var store = Open(dir);
        using (var txn = store.BeginWrite(1))
        {
            txn.Put(Encoding.UTF8.GetBytes("k"), Encoding.UTF8.GetBytes(Value), 0);
            txn.Commit();
        }

        store.Checkpoint();
    }

    private static MvccStore Open(string dir) =>
        MvccStore.Open(new MvccStoreOptions { DataDirectory = dir, MemorySizeBits = 20, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8 }, NullLogger.Instance);
}
