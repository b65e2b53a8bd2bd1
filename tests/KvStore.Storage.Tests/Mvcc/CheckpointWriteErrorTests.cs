using KvStore.Storage.Mvcc;
using KvStore.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// A checkpoint whose files cannot be written (EIO, a full disk). FasterKV ignores the outcome of its metadata writes
/// and deletes the previous checkpoint once the new metadata is "written"; the store must refuse the checkpoint
/// instead, and keep the previous one, so that recovery finds a whole state.
/// </summary>
public sealed class CheckpointWriteErrorTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [InlineData("cpr-checkpoints")]
    [InlineData("index-checkpoints")]
    public void A_failed_checkpoint_file_write_fails_the_checkpoint_and_keeps_the_previous_one(string failingDirectory)
    {
        var dir = _tmp.Sub("kv");
        var image = _tmp.Sub("image");
        var failWrites = false;
        var store = MvccStore.Open(
            new MvccStoreOptions
            {
                DataDirectory = dir, MemorySizeBits = 20, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8,
                WrapCheckpointDevice = inner =>
                {
                    if (!Volatile.Read(ref failWrites) || !inner.FileName.Contains(failingDirectory, StringComparison.Ordinal))
                    {
                        return inner;
                    }

                    var failing = new PowerLossDevice(inner);
                    failing.CutPower(); // every write fails with EIO, nothing reaches the file
                    return failing;
                },
            },
            NullLogger.Instance);
        try
        {
            for (var i = 1; i <= 20; i++)
            {
                CheckpointDamageSweepTests.Write(store, i);
            }

            store.Checkpoint();
            for (var i = 21; i <= 30; i++)
            {
                CheckpointDamageSweepTests.Write(store, i);
            }

            Volatile.Write(ref failWrites, true);
            var checkpoint = () => store.Checkpoint();
            checkpoint.Should().Throw<IOException>().WithMessage($"*{failingDirectory}*failed (error 5)*");

            // What a crash now leaves (checked below): recovery must find the previous checkpoint, whole.
            StoreFiles.CopyAsCrashImage(dir, image);

            // The store refuses later checkpoints too, even when their writes succeed: it has seen a write lost.
            Volatile.Write(ref failWrites, false);
            checkpoint.Should().Throw<IOException>();
        }
        finally
        {
            store.CloseWithoutCheckpoint();
        }

        using var reopened = MvccStore.Open(
            new MvccStoreOptions { DataDirectory = image, MemorySizeBits = 20, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8 },
            NullLogger.Instance);
        // With the log checkpoint's metadata lost, only the previous checkpoint reads. With the index checkpoint's
        // files lost, FasterKV may pair the new log checkpoint with the previous index and replay the log between.
        var index = (int)reopened.ConsistentIndex;
        index.Should().BeOneOf(failingDirectory == "cpr-checkpoints" ? [20] : [20, 30], "the checkpoint before the failed one is kept");
        CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(index), "the state at index {0}, whole", index);
    }
}
