using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// Crash images (copies of an open store's files) with a log checkpoint whose metadata never reached the disk, as a
/// crash during a checkpoint leaves them. Before any checkpoint finished, a caller whose log holds every write lets
/// the store drop it and open empty; otherwise the store refuses, naming the metadata file.
/// </summary>
public sealed class FirstCheckpointCrashTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void An_unfinished_first_checkpoint_is_dropped_when_the_log_holds_every_write(bool metadataFileCreated)
    {
        var image = CrashImage(writes: 30, checkpointAfter: 0, metadataFileCreated);

        using (var reopened = Open(image, logHoldsEveryWrite: true))
        {
            reopened.ConsistentIndex.Should().Be(0, "no checkpoint finished: the caller's log replays everything");
            CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(0));
            Directory.EnumerateDirectories(Path.Combine(image, "checkpoints")).Should().BeEmpty("the unfinished checkpoint is dropped");

            // The replay: the same writes again, over the old log files, then a checkpoint that must hold.
            for (var i = 1; i <= 40; i++)
            {
                CheckpointDamageSweepTests.Write(reopened, i);
            }

            reopened.Checkpoint();
        }

        using var again = Open(image, logHoldsEveryWrite: true);
        again.ConsistentIndex.Should().Be(40);
        CheckpointDamageSweepTests.Describe(again).Should().Equal(CheckpointDamageSweepTests.Expected(40));
    }

    [Fact]
    public void An_unfinished_first_checkpoint_refuses_the_open_when_the_log_may_not_hold_every_write()
    {
        var image = CrashImage(writes: 30, checkpointAfter: 0, metadataFileCreated: true);

        var open = () => Open(image, logHoldsEveryWrite: false);
        open.Should().Throw<InvalidDataException>().WithMessage("*has readable metadata*info.dat*");
        Directory.EnumerateDirectories(Path.Combine(image, "checkpoints", "cpr-checkpoints")).Should().ContainSingle("nothing is dropped");
    }

    [Fact]
    public void A_finished_checkpoint_is_kept_even_when_the_log_holds_every_write()
    {
        var image = CrashImage(writes: 30, checkpointAfter: 20, metadataFileCreated: true);

        using var reopened = Open(image, logHoldsEveryWrite: true);
        reopened.ConsistentIndex.Should().Be(20, "the checkpoint that finished is recovered, the unfinished one skipped");
        CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(20));
    }

    /// <summary>
    /// Writes 1..<paramref name="writes"/> (a checkpoint after write <paramref name="checkpointAfter"/> unless 0),
    /// copies the open store's files, and adds a log checkpoint whose metadata never reached the disk: a token
    /// directory with an empty metadata file, or without one.
    /// </summary>
    private string CrashImage(int writes, int checkpointAfter, bool metadataFileCreated)
    {
        var dir = _tmp.Sub("kv");
        var image = _tmp.Sub("image");
        using (var store = Open(dir, logHoldsEveryWrite: false))
        {
            for (var i = 1; i <= writes; i++)
            {
                CheckpointDamageSweepTests.Write(store, i);
                if (i == checkpointAfter)
                {
                    store.Checkpoint();
                }
            }

            StoreFiles.CopyAsCrashImage(dir, image);
        }

        var unfinished = Path.Combine(image, "checkpoints", "cpr-checkpoints", Guid.NewGuid().ToString());
        Directory.CreateDirectory(unfinished);
        if (metadataFileCreated)
        {
            File.WriteAllBytes(Path.Combine(unfinished, "info.dat.0"), []);
        }

        return image;
    }

    private static MvccStore Open(string dir, bool logHoldsEveryWrite) =>
        MvccStore.Open(
            new MvccStoreOptions
            {
                DataDirectory = dir, MemorySizeBits = 20, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8,
                LogHoldsEveryWrite = logHoldsEveryWrite,
            },
            NullLogger.Instance);
}
