using System.Text;
using KvStore.Storage.Bolt;
using KvStore.Storage.EtcdSnapshot;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>Store → etcd bbolt snapshot → store: every revision, the compaction point, meta and HashKV survive.</summary>
public sealed class EtcdSnapshotTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private ulong _index;

    public void Dispose() => _tmp.Dispose();

    private MvccStoreOptions Options(string name) => new()
    {
        DataDirectory = _tmp.Sub(name),
        IndexBuckets = 1 << 10,
        PageSizeBits = 16,
        MemorySizeBits = 20,
        SegmentSizeBits = 20,
    };

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    private void Write(MvccStore store, Action<MvccWriteTxn> body)
    {
        using var txn = store.BeginWrite(++_index);
        body(txn);
        txn.Commit();
    }

    private static string Describe(MvccStore s, long rev = 0)
    {
        var r = s.Range(B("\0"), B("\0"), new RangeOptions(Revision: rev));
        r.Error.Should().Be(MvccError.None);
        return string.Join(";", r.Kvs.Select(kv => $"{Encoding.UTF8.GetString(kv.Key)}={Encoding.UTF8.GetString(kv.Value)}@c{kv.CreateRevision}m{kv.ModRevision}v{kv.Version}l{kv.Lease}"));
    }

    private sealed class PassThrough : IEtcdMetaMapper
    {
        public IEnumerable<MetaRecord> ToEtcd(MetaRecord record) => [record];

        public IEnumerable<MetaRecord> FromEtcd(MetaRecord record) => [record];
    }

    [Fact]
    public async Task Export_then_import_keeps_history_compaction_meta_and_hash()
    {
        using var src = MvccStore.Open(Options("src"), NullLogger.Instance);
        for (var i = 0; i < 400; i++)
        {
            Write(src, t => t.Put(B($"k/{i % 37}"), B($"v{i}-{new string('x', i % 50)}"), lease: i % 3));
        }

        Write(src, t => t.DeleteRange(B("k/1"), []));
        Write(src, t => t.PutMeta("lease", B("l1"), B("ttl=5")));
        var compactAt = src.CurrentRevision - 100;
        src.Compact(compactAt);
        await src.PhysicalCompactionDone(compactAt);
        Write(src, t => t.DeleteRange(B("k/2"), B("k/3")));

        var path = _tmp.Sub("snap.db");
        var rev = src.CurrentRevision;
        var summary = await src.ExportAsync((view, records) =>
        {
            // The writer is not held off while the file is written, and its writes are not in it.
            Task.Run(() => Write(src, t => t.Put(B("late"), B("x"), 0))).Wait(TimeSpan.FromSeconds(30)).Should().BeTrue();
            using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite);
            return EtcdSnapshotWriter.Write(view, records, fs, new PassThrough());
        });
        src.CurrentRevision.Should().Be(rev + 1);
        summary.Revision.Should().Be(rev);
        summary.CompactRevision.Should().Be(compactAt);

        using (var reader = BoltReader.Open(path))
        {
            reader.BucketNames.Should().Contain(EtcdLayout.StandardBuckets);
            EtcdSnapshotFile.Status(reader).Revision.Should().Be(rev);
            var content = EtcdSnapshotFile.ReadContent(reader);
            content.Should().Be(new EtcdSnapshotContent(rev, compactAt, src.ConsistentIndex - 1));
            EtcdSnapshotFile.Revisions(reader).Should().NotContain(r => r.Revision.Main > rev);
            EtcdSnapshotFile.MetaRecords(reader, new PassThrough()).Should().ContainSingle(m => m.Bucket == "lease");
            MvccStore.WriteImage(Options("dst"), NullLogger.Instance, 0, content.Revision, content.CompactRevision,
                EtcdSnapshotFile.Revisions(reader), EtcdSnapshotFile.MetaRecords(reader, new PassThrough()));
        }

        using var dst = MvccStore.Open(Options("dst"), NullLogger.Instance);
        dst.ConsistentIndex.Should().Be(0);
        dst.CurrentRevision.Should().Be(rev);
        dst.CompactRevision.Should().Be(compactAt);
        dst.ReadMeta("lease").Should().ContainSingle();
        for (var r = compactAt; r <= rev; r += 7)
        {
            Describe(dst, r).Should().Be(Describe(src, r), $"revision {r}");
            dst.HashKV(r).Hash.Should().Be(src.HashKV(r).Hash, $"HashKV at {r}");
        }

        dst.HashKV(rev).Hash.Should().Be(src.HashKV(rev).Hash);
        dst.Range(B("a"), [], new RangeOptions(Revision: compactAt - 1)).Error.Should().Be(MvccError.Compacted);
    }

    [Theory]
    [InlineData(1)] // the second listing runs while writes go on
    [InlineData(2)] // both listings raced a compaction: the third holds the writer off
    public async Task Export_taken_again_when_a_compaction_drops_revisions_while_they_are_listed(int racingCompactions)
    {
        using var src = MvccStore.Open(Options("src"), NullLogger.Instance);
        for (var i = 0; i < 300; i++)
        {
            Write(src, t => t.Put(B($"k/{i % 20}"), B($"v{i}"), 0));
        }

        var listings = 0;
        var compactedAt = new List<long>();
        src.OnViewListingForTest = () =>
        {
            if (++listings <= racingCompactions)
            {
                // The writer is not held off here: a compaction drops history the view's state still promises.
                var at = src.CurrentRevision - 50 * (racingCompactions - listings + 1);
                src.Compact(at).Error.Should().Be(MvccError.None);
                compactedAt.Add(at);
            }
        };

        var rev = src.CurrentRevision;
        var (compact, exported) = await src.ExportAsync((view, records) => (view.CompactRevision, records.Select(r => r.Revision).ToList()));

        listings.Should().Be(2, "a listing that raced a compaction is redone, and only two run while writes go on");
        compact.Should().Be(compactedAt[^1]);
        exported.Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
        exported.Should().NotContain(r => r.Main > rev);

        // Exactly what the key index holds after the last compaction: every key's history from the compact revision.
        var expected = new SortedSet<Revision>();
        for (var r = compact; r <= rev; r++)
        {
            foreach (var kv in src.Range(B("k/"), B("k0"), new RangeOptions(Revision: r)).Kvs)
            {
                expected.Add(new Revision(kv.ModRevision, 0));
            }
        }

        exported.Should().Equal(expected);
    }

    [Fact]
    public async Task Export_reads_records_evicted_from_memory_to_disk()
    {
        // 1 MiB of in-memory log (MemorySizeBits 20) and 6 MiB of values: most reads are disk reads, batched.
        using var src = MvccStore.Open(Options("src"), NullLogger.Instance);
        for (var i = 0; i < 6000; i++)
        {
            var value = new byte[1024];
            new Random(i).NextBytes(value);
            Write(src, t => t.Put(B($"big/{i:D5}"), value, 0));
        }

        src.Checkpoint();
        var path = _tmp.Sub("snap.db");
        await src.ExportAsync((view, records) =>
        {
            using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite);
            return EtcdSnapshotWriter.Write(view, records, fs, new PassThrough());
        });

        using var reader = BoltReader.Open(path);
        var exported = EtcdSnapshotFile.Revisions(reader).ToList();
        exported.Should().HaveCount(6000);
        var live = src.Range(B("big/"), B("big0"), default).Kvs;
        for (var i = 0; i < live.Count; i += 97)
        {
            var kv = KeyValueCodec.Decode(exported[i].KeyValue.Span, keysOnly: false);
            (kv.Key, kv.Value, kv.ModRevision).Should().BeEquivalentTo((live[i].Key, live[i].Value, live[i].ModRevision));
        }
    }

    [Fact]
    public void Import_of_an_etcd_snapshot_reads_and_hashes_as_etcd()
    {
        // etcd's snapshot (see BoltFileTests) was compacted at 3: revisions 2 and 3 stay as the keys' latest versions
        // at 3, so reads at 3 still work.
        var file = Path.Combine(AppContext.BaseDirectory, "Bolt", "testdata", "etcd-3.4.23-small.db");
        using (var reader = BoltReader.Open(file))
        {
            var content = EtcdSnapshotFile.ReadContent(reader);
            MvccStore.WriteImage(Options("dst"), NullLogger.Instance, 0, content.Revision, content.CompactRevision,
                EtcdSnapshotFile.Revisions(reader), []);
        }

        using var dst = MvccStore.Open(Options("dst"), NullLogger.Instance);
        dst.CurrentRevision.Should().Be(6);
        dst.CompactRevision.Should().Be(3);
        Describe(dst).Should().Be("a=3@c2m4v2l0;c=4@c6m6v1l2389619457773515017");
        Describe(dst, 3).Should().Be("a=1@c2m2v1l0;b=2@c3m3v1l0");
        dst.HashKV(6).Hash.Should().Be(1568927392u); // etcdctl endpoint hashkv on the source etcd
    }
}
