using System.Buffers.Binary;
using System.Text;
using KvStore.Storage.Bolt;
using KvStore.Storage.EtcdSnapshot;

namespace KvStore.Storage.Tests.Bolt;

public sealed class BoltFileTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    private static string EtcdFile => Path.Combine(AppContext.BaseDirectory, "Bolt", "testdata", "etcd-3.4.23-small.db");

    /// <summary>Buckets: empty (inline), one small page, many keys (several branch levels), values bigger than a page.</summary>
    private static SortedDictionary<string, List<(byte[] Key, byte[] Value)>> Sample()
    {
        var rng = new Random(11);
        var many = Enumerable.Range(0, 60_000).Select(i => (B($"k{i:D7}"), B($"value-{i}"))).ToList();
        var big = Enumerable.Range(0, 50).Select(i =>
        {
            var value = new byte[i % 5 == 0 ? 20_000 + i : 3000];
            rng.NextBytes(value);
            return (B($"big{i:D3}"), value);
        }).ToList();
        return new(StringComparer.Ordinal)
        {
            ["empty"] = [],
            ["few"] = [(B("a"), B("1")), (B("b"), []), (B("c"), B("3"))],
            ["many"] = many,
            ["overflow"] = big,
        };
    }

    private string WriteSample(SortedDictionary<string, List<(byte[] Key, byte[] Value)>> sample)
    {
        var path = _tmp.Sub("sample.db");
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite);
        var writer = new BoltWriter(fs);
        foreach (var (name, records) in sample)
        {
            writer.BeginBucket(B(name));
            foreach (var (k, v) in records)
            {
                writer.Put(k, v);
            }

            writer.EndBucket();
        }

        writer.Finish();
        fs.Length.Should().Be((long)writer.PageCount * BoltFormat.DefaultPageSize);
        return path;
    }

    [Fact]
    public void Written_file_reads_back_bucket_by_bucket_in_order()
    {
        var sample = Sample();
        var path = WriteSample(sample);
        using var reader = BoltReader.Open(path);
        reader.PageSize.Should().Be(4096);
        reader.BucketNames.Should().Equal(sample.Keys);
        foreach (var (name, records) in sample)
        {
            var read = reader.Read(name).ToList();
            read.Select(r => Convert.ToHexString(r.Key)).Should().Equal(records.Select(r => Convert.ToHexString(r.Key)), name);
            read.Select(r => Convert.ToHexString(r.Value)).Should().Equal(records.Select(r => Convert.ToHexString(r.Value)), name);
            reader.LastKey(name).Should().Equal(records.Count == 0 ? null : records[^1].Key, name);
        }
    }

    [Fact]
    public void Every_page_is_reachable_exactly_once()
    {
        // bbolt's consistency check (run by etcd's `snapshot status`) fails on unreachable or doubly used pages.
        var path = WriteSample(Sample());
        var bytes = File.ReadAllBytes(path);
        var pages = bytes.Length / 4096;
        var seen = new int[pages];
        seen[0] = seen[1] = seen[2] = 1; // meta, meta, freelist
        var rootPage = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16 + 16));
        void Walk(ulong id)
        {
            var at = (int)id * 4096;
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at + 8));
            var count = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at + 10));
            var overflow = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 12));
            BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at)).Should().Be(id);
            for (var i = 0; i <= overflow; i++)
            {
                seen[(int)id + i]++;
            }

            for (var e = 0; e < count; e++)
            {
                var el = at + 16 + (16 * e);
                if (flags == BoltFormat.BranchPage)
                {
                    Walk(BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(el + 8)));
                }
                else if ((BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(el)) & BoltFormat.BucketLeafFlag) != 0)
                {
                    var pos = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(el + 4));
                    var ksize = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(el + 8));
                    var child = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(el + pos + ksize));
                    if (child != 0)
                    {
                        Walk(child);
                    }
                }
            }
        }

        Walk(rootPage);
        seen.Should().OnlyContain(n => n == 1);
    }

    [Fact]
    public void Writer_refuses_unsorted_input()
    {
        using var fs = new MemoryStream();
        var writer = new BoltWriter(fs);
        writer.BeginBucket(B("b"));
        writer.Put(B("k2"), B("x"));
        FluentActions.Invoking(() => writer.Put(B("k1"), B("x"))).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => writer.Put(B("k2"), B("x"))).Should().Throw<ArgumentException>();
        writer.EndBucket();
        FluentActions.Invoking(() => writer.BeginBucket(B("a"))).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Reads_a_snapshot_taken_from_etcd()
    {
        // etcdctl 3.4.23 snapshot save after: put a 1; put b 2; put a 3; del b; lease grant 100; put c 4 --lease; compact 3.
        using var reader = BoltReader.Open(EtcdFile);
        reader.BucketNames.Should().Equal(EtcdLayout.StandardBuckets);
        var status = EtcdSnapshotFile.Status(reader);
        status.Should().Be(new EtcdSnapshotStatus(136573830, 6, 12, 20480)); // etcdctl snapshot status -w json
        var content = EtcdSnapshotFile.ReadContent(reader);
        content.Should().Be(new EtcdSnapshotContent(6, 3, 10));
        var records = EtcdSnapshotFile.Revisions(reader).ToList();
        records.Select(r => (r.Revision.Main, r.Tombstone)).Should().Equal((2, false), (3, false), (4, false), (5, true), (6, false));
        EtcdSnapshotFile.VerifyHash(EtcdFile, skipHashCheck: false).Should().Be(20480);
    }

    [Fact]
    public void Hash_trailer_is_checked()
    {
        var copy = _tmp.Sub("copy.db");
        var bytes = File.ReadAllBytes(EtcdFile);
        bytes[5000] ^= 1;
        File.WriteAllBytes(copy, bytes);
        FluentActions.Invoking(() => EtcdSnapshotFile.VerifyHash(copy, skipHashCheck: false))
            .Should().Throw<InvalidDataException>().WithMessage("expected sha256 *, got *");
        EtcdSnapshotFile.VerifyHash(copy, skipHashCheck: true).Should().Be(20480);

        File.WriteAllBytes(copy, bytes[..20480]);
        FluentActions.Invoking(() => EtcdSnapshotFile.VerifyHash(copy, skipHashCheck: false))
            .Should().Throw<InvalidDataException>().WithMessage("snapshot missing hash but --skip-hash-check=false");
    }

    [Fact]
    public void Damaged_pages_are_reported_not_misread()
    {
        var path = WriteSample(Sample());
        var bytes = File.ReadAllBytes(path);
        bytes[16 + 8] ^= 0xFF; // meta 0 page size: checksum fails, meta 1 (older txid) is used
        File.WriteAllBytes(path, bytes);
        using (var reader = BoltReader.Open(path))
        {
            reader.TxId.Should().Be(1);
            reader.Read("few").Should().HaveCount(3);
        }

        bytes[4096 + 16 + 8] ^= 0xFF; // both metas broken
        File.WriteAllBytes(path, bytes);
        FluentActions.Invoking(() => BoltReader.Open(path)).Should().Throw<InvalidDataException>().WithMessage("*no valid meta page*");

        var good = File.ReadAllBytes(WriteSample2());
        BinaryPrimitives.WriteUInt64LittleEndian(good.AsSpan(3 * 4096), 999); // the first data page (bucket "few") claims another id
        File.WriteAllBytes(path, good);
        using var damaged = BoltReader.Open(path);
        FluentActions.Invoking(() => damaged.Read("few").ToList()).Should().Throw<InvalidDataException>().WithMessage("*page 3 says it is page 999*");
    }

    private string WriteSample2()
    {
        File.Delete(_tmp.Sub("sample.db"));
        return WriteSample(Sample());
    }
}
