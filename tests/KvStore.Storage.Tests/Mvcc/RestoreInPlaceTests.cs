using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary><see cref="MvccStore.RestoreFrom"/>: a running store takes a snapshot's state in place (raft snapshot install).</summary>
public sealed class RestoreInPlaceTests : IDisposable
{
    private readonly TempDir _tmp = new();

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

    private static void Write(MvccStore store, Action<MvccWriteTxn> body)
    {
        using var txn = store.BeginWrite(store.ConsistentIndex + 1);
        body(txn);
        txn.Commit();
    }

    /// <summary>A history with overwrites, deletes, leases, meta and a compaction; <paramref name="tag"/> makes it distinct.</summary>
    private async Task<MvccStore> Populated(string name, string tag, int writes)
    {
        var store = MvccStore.Open(Options(name), NullLogger.Instance);
        for (var i = 0; i < writes; i++)
        {
            Write(store, t => t.Put(B($"{tag}/{i % 7}"), B($"{tag}{i}"), lease: i % 3));
        }

        Write(store, t => t.DeleteRange(B($"{tag}/1"), []));
        Write(store, t =>
        {
            t.PutMeta("members", B("m1"), B($"peer-{tag}"));
            t.PutMeta("lease", B("l1"), B($"ttl-{tag}"));
        });
        var compactAt = store.CurrentRevision - 5;
        store.Compact(compactAt);
        await store.PhysicalCompactionDone(compactAt);
        Write(store, t => t.Put(B($"{tag}/2"), B("again"), 0));
        return store;
    }

    private static string Describe(MvccStore s, long rev = 0)
    {
        var r = s.Range(B("\0"), B("\0"), new RangeOptions(Revision: rev));
        r.Error.Should().Be(MvccError.None);
        return r.Revision + ":" + string.Join(";", r.Kvs.Select(kv => $"{Encoding.UTF8.GetString(kv.Key)}={Encoding.UTF8.GetString(kv.Value)}@c{kv.CreateRevision}m{kv.ModRevision}v{kv.Version}l{kv.Lease}"));
    }

    [Fact]
    public async Task Restore_in_place_gives_the_source_state_and_survives_a_reopen()
    {
        using var src = await Populated("src", "s", 40);
        var file = await src.CreateSnapshotFileAsync(_tmp.Sub("snaps"));
        var dst = await Populated("dst", "d", 12);
        HashKVResult hashAfter;
        try
        {
            dst.RestoreFrom(file);

            dst.ConsistentIndex.Should().Be(src.ConsistentIndex);
            dst.CurrentRevision.Should().Be(src.CurrentRevision);
            dst.CompactRevision.Should().Be(src.CompactRevision);
            dst.Range(B("d/0"), [], default).Kvs.Should().BeEmpty();
            for (var rev = src.CompactRevision; rev <= src.CurrentRevision; rev++)
            {
                Describe(dst, rev).Should().Be(Describe(src, rev), $"revision {rev}");
                dst.HashKV(rev).Should().Be(src.HashKV(rev), $"HashKV at {rev}");
            }

            dst.ReadEvents(B("\0"), B("\0"), src.CompactRevision + 1, 0, 0)
                .Should().BeEquivalentTo(src.ReadEvents(B("\0"), B("\0"), src.CompactRevision + 1, 0, 0), o => o.WithStrictOrdering());
            dst.ReadMeta("members").Should().BeEquivalentTo(src.ReadMeta("members"));
            dst.ReadMeta("lease").Should().BeEquivalentTo(src.ReadMeta("lease"));
            Directory.Exists(_tmp.Sub("dst") + ".restore").Should().BeFalse();
            Directory.Exists(_tmp.Sub("dst") + ".restore.tmp").Should().BeFalse();
            Directory.Exists(_tmp.Sub("dst") + ".old").Should().BeFalse();

            // The writer, compaction and checkpoints go on with the restored state.
            var rev0 = dst.CurrentRevision;
            Write(dst, t => t.Put(B("after"), B("restore"), 0));
            dst.CurrentRevision.Should().Be(rev0 + 1);
            dst.Compact(rev0).Error.Should().Be(MvccError.None);
            await dst.PhysicalCompactionDone(rev0);
            dst.Checkpoint();
            hashAfter = dst.HashKV(0);
        }
        finally
        {
            dst.Dispose();
        }

        using var reopened = MvccStore.Open(Options("dst"), NullLogger.Instance);
        reopened.ConsistentIndex.Should().Be(src.ConsistentIndex + 1);
        reopened.Range(B("after"), [], default).Kvs.Should().ContainSingle();
        reopened.HashKV(0).Should().Be(hashAfter);
        reopened.ReadMeta("members").Should().BeEquivalentTo(src.ReadMeta("members"));
    }

    [Fact]
    public async Task Concurrent_readers_see_the_old_or_the_new_state_never_a_mix()
    {
        using var a = await Populated("a", "a", 30);
        using var b = await Populated("b", "b", 50);
        var fileA = await a.CreateSnapshotFileAsync(_tmp.Sub("snap-a"));
        var fileB = await b.CreateSnapshotFileAsync(_tmp.Sub("snap-b"));
        var states = new[] { a, b }.Select(s => new
        {
            Range = Describe(s),
            Hash = s.HashKV(0),
            Events = s.ReadEvents(B("\0"), B("\0"), s.CompactRevision + 1, 0, 0).Count,
            Members = Encoding.UTF8.GetString(s.ReadMeta("members").Single().Value),
        }).ToList();

        using var dst = MvccStore.Open(Options("dst"), NullLogger.Instance);
        dst.RestoreFrom(fileA);
        using var stop = new CancellationTokenSource();
        var observations = 0L;
        var readers = Enumerable.Range(0, 4).Select(r => Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                switch (r)
                {
                    case 0:
                        states.Select(s => s.Range).Should().Contain(Describe(dst));
                        break;
                    case 1:
                        states.Select(s => s.Hash).Should().Contain(dst.HashKV(0));
                        break;
                    case 2:
                        var events = dst.ReadEvents(B("\0"), B("\0"), 0, 0, 0);
                        events.Should().NotBeEmpty();
                        _ = dst.DbSizeBytes;
                        break;
                    default:
                        states.Select(s => s.Members).Should().Contain(Encoding.UTF8.GetString(dst.ReadMeta("members").Single().Value));
                        break;
                }

                Interlocked.Increment(ref observations);
            }
        })).ToList();

        for (var i = 0; i < 6; i++)
        {
            var before = Interlocked.Read(ref observations);
            await Task.Delay(20);
            dst.RestoreFrom(i % 2 == 0 ? fileB : fileA);
            Interlocked.Read(ref observations).Should().BeGreaterThan(before);
        }

        await stop.CancelAsync();
        await Task.WhenAll(readers);
        Describe(dst).Should().Be(states[0].Range);
        dst.HashKV(0).Should().Be(states[0].Hash);
    }

    [Theory]
    [InlineData("flip-middle")]
    [InlineData("truncate")]
    [InlineData("missing")]
    public async Task A_damaged_file_fails_naming_it_and_leaves_the_store_untouched(string damage)
    {
        using var src = await Populated("src", "s", 20);
        var file = await src.CreateSnapshotFileAsync(_tmp.Sub("snaps"));
        var bytes = await File.ReadAllBytesAsync(file);
        if (damage == "missing")
        {
            File.Delete(file);
        }
        else
        {
            bytes = damage == "truncate" ? bytes[..(bytes.Length - 20)] : Flip(bytes, bytes.Length / 2);
            await File.WriteAllBytesAsync(file, bytes);
        }

        using var dst = await Populated("dst", "d", 10);
        var before = (Describe(dst), dst.HashKV(0), dst.ConsistentIndex);
        var act = () => dst.RestoreFrom(file);
        if (damage == "missing")
        {
            act.Should().Throw<FileNotFoundException>().WithMessage($"*{file}*");
        }
        else
        {
            act.Should().Throw<InvalidDataException>().WithMessage($"*'{file}'*");
        }

        (Describe(dst), dst.HashKV(0), dst.ConsistentIndex).Should().Be(before);
        Directory.Exists(_tmp.Sub("dst") + ".restore.tmp").Should().BeFalse();
        Directory.Exists(_tmp.Sub("dst") + ".restore").Should().BeFalse();
        Write(dst, t => t.Put(B("still"), B("writable"), 0));
        dst.Range(B("still"), [], default).Kvs.Should().ContainSingle();
    }

    private static byte[] Flip(byte[] bytes, int at)
    {
        bytes[at] ^= 0x40;
        return bytes;
    }
}
