using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

public sealed class SnapshotFileTests : IDisposable
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

    /// <summary>History with puts, overwrites, deletes, a re-created key, leases, meta, a compaction and an empty txn.</summary>
    private async Task<MvccStore> Populated()
    {
        var store = MvccStore.Open(Options("src"), NullLogger.Instance);
        for (var i = 0; i < 30; i++)
        {
            Write(store, t => t.Put(B($"k/{i % 7}"), B($"v{i}"), lease: i % 3));
        }

        Write(store, t => t.DeleteRange(B("k/1"), []));
        Write(store, t =>
        {
            t.Put(B("a"), B("1"), 0);
            t.Put(B("b"), B("2"), 0);
            t.PutMeta("lease", B("l1"), B("ttl=5"));
            t.PutMeta("members", B("m1"), B("peer"));
        });
        var compactAt = store.CurrentRevision - 10;
        store.Compact(compactAt);
        await store.PhysicalCompactionDone(compactAt);
        Write(store, t => t.DeleteRange(B("k/"), B("k0")));
        Write(store, t => t.Put(B("k/2"), B("again"), 0));
        Write(store, t => t.DeleteMeta("lease", B("l1")));
        Write(store, _ => { });
        return store;
    }

    private static string Describe(MvccStore s, long rev = 0)
    {
        var r = s.Range(B("\0"), B("\0"), new RangeOptions(Revision: rev));
        r.Error.Should().Be(MvccError.None);
        return string.Join(";", r.Kvs.Select(kv => $"{Encoding.UTF8.GetString(kv.Key)}={Encoding.UTF8.GetString(kv.Value)}@c{kv.CreateRevision}m{kv.ModRevision}v{kv.Version}l{kv.Lease}"));
    }

    [Fact]
    public async Task Snapshot_restored_into_a_new_dir_reads_and_hashes_the_same()
    {
        using var src = await Populated();
        var file = await src.CreateSnapshotFileAsync(_tmp.Sub("snaps"));
        File.Exists(file).Should().BeTrue();
        Path.GetFileName(file).Should().Be($"kvstore-{src.ConsistentIndex}.snap");

        // Writes after the snapshot are not in it.
        Write(src, t => t.Put(B("late"), B("x"), 0));
        var srcRev = src.CurrentRevision - 1;

        using var restored = MvccStore.RestoreFromSnapshotFile(file, Options("dst"), NullLogger.Instance);
        restored.ConsistentIndex.Should().Be(_index - 1);
        restored.CurrentRevision.Should().Be(srcRev);
        restored.CompactRevision.Should().Be(src.CompactRevision);
        Describe(restored).Should().Be(Describe(src, srcRev));
        restored.Range(B("late"), [], default).Kvs.Should().BeEmpty();
        for (var rev = src.CompactRevision; rev <= srcRev; rev++)
        {
            Describe(restored, rev).Should().Be(Describe(src, rev), $"revision {rev}");
            var (want, got) = (src.HashKV(rev), restored.HashKV(rev));
            (got.Error, got.Hash, got.CompactRevision).Should().Be((want.Error, want.Hash, want.CompactRevision), $"HashKV at {rev}");
        }

        restored.Range(B("a"), [], new RangeOptions(Revision: src.CompactRevision - 1)).Error.Should().Be(MvccError.Compacted);
        restored.ReadEvents(B("\0"), B("\0"), src.CompactRevision + 1, srcRev, 0)
            .Should().BeEquivalentTo(src.ReadEvents(B("\0"), B("\0"), src.CompactRevision + 1, srcRev, 0), o => o.WithStrictOrdering());
        restored.ReadMeta("members").Select(m => Encoding.UTF8.GetString(m.Value)).Should().Equal("peer");
        restored.ReadMeta("lease").Should().BeEmpty();

        // The restored store keeps working and survives a restart.
        using (var txn = restored.BeginWrite(_index + 1))
        {
            txn.Put(B("after"), B("restore"), 0).Should().Be(0);
            txn.Revision.Should().Be(srcRev + 1);
            txn.Commit();
        }

        restored.Dispose();
        using var reopened = MvccStore.Open(Options("dst"), NullLogger.Instance);
        reopened.Range(B("after"), [], default).Kvs.Should().ContainSingle();
        reopened.HashKV(srcRev).Hash.Should().Be(src.HashKV(srcRev).Hash);
    }

    [Fact]
    public async Task Restore_replaces_an_existing_data_dir()
    {
        using var src = await Populated();
        var file = await src.CreateSnapshotFileAsync(_tmp.Sub("snaps"));
        using (var other = MvccStore.Open(Options("dst"), NullLogger.Instance))
        {
            using var txn = other.BeginWrite(1000);
            txn.Put(B("only-in-old"), B("x"), 0);
            txn.Commit();
        }

        using var restored = MvccStore.RestoreFromSnapshotFile(file, Options("dst"), NullLogger.Instance);
        restored.Range(B("only-in-old"), [], default).Kvs.Should().BeEmpty();
        restored.ConsistentIndex.Should().Be(src.ConsistentIndex);
        Directory.Exists(_tmp.Sub("dst") + ".restore").Should().BeFalse();
        Directory.Exists(_tmp.Sub("dst") + ".old").Should().BeFalse();
    }

    [Fact]
    public async Task Interrupted_swap_is_finished_by_open()
    {
        using var src = await Populated();
        var file = await src.CreateSnapshotFileAsync(_tmp.Sub("snaps"));
        using (MvccStore.RestoreFromSnapshotFile(file, Options("built"), NullLogger.Instance))
        {
        }

        // Crash right after the complete copy got its final ".restore" name, before the swap.
        using (var old = MvccStore.Open(Options("dst"), NullLogger.Instance))
        {
            using var txn = old.BeginWrite(1);
            txn.Put(B("stale"), B("x"), 0);
            txn.Commit();
        }

        Directory.Move(_tmp.Sub("built"), _tmp.Sub("dst") + ".restore");
        using var opened = MvccStore.Open(Options("dst"), NullLogger.Instance);
        opened.Range(B("stale"), [], default).Kvs.Should().BeEmpty();
        opened.HashKV(0).Should().Be(src.HashKV(0));
    }

    [Theory]
    [InlineData("flip-middle")]
    [InlineData("truncate")]
    [InlineData("bad-magic")]
    [InlineData("empty")]
    public async Task Corrupt_snapshot_fails_naming_the_file_and_leaves_the_data_dir_alone(string damage)
    {
        using var src = await Populated();
        var file = await src.CreateSnapshotFileAsync(_tmp.Sub("snaps"));
        var bytes = await File.ReadAllBytesAsync(file);
        bytes = damage switch
        {
            "flip-middle" => Flip(bytes, bytes.Length / 2),
            "truncate" => bytes[..(bytes.Length - 20)],
            "bad-magic" => Flip(bytes, 0),
            _ => [],
        };
        await File.WriteAllBytesAsync(file, bytes);
        using (var existing = MvccStore.Open(Options("dst"), NullLogger.Instance))
        {
            using var txn = existing.BeginWrite(1);
            txn.Put(B("keep"), B("me"), 0);
            txn.Commit();
        }

        var act = () => MvccStore.RestoreFromSnapshotFile(file, Options("dst"), NullLogger.Instance);
        act.Should().Throw<InvalidDataException>().WithMessage($"*'{file}'*");
        Directory.Exists(_tmp.Sub("dst") + ".restore.tmp").Should().BeFalse();
        using var untouched = MvccStore.Open(Options("dst"), NullLogger.Instance);
        untouched.Range(B("keep"), [], default).Kvs.Should().ContainSingle();
    }

    private static byte[] Flip(byte[] bytes, int at)
    {
        bytes[at] ^= 0x40;
        return bytes;
    }
}
