using KvStore.Storage.Mvcc;
using KvStore.Storage.Tests.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KvStore.Storage.Tests.PowerLoss;

/// <summary>
/// The MVCC store's FasterKV files over <see cref="PowerLossDevice"/>s on one <see cref="PowerDomain"/>: the log, and
/// every checkpoint file (index table, index and log checkpoint metadata). Writes and fold-over checkpoints run while
/// the power is cut at a random moment with writes in flight, in half the cuts to the log and in the other half to a
/// checkpoint's own files; every write in flight at the cut, on any of the files, then reaches the disk whole, torn
/// at a sector, or not at all. The store must then open at a consistent index no lower than the last checkpoint that
/// completed, holding exactly the state the writes up to that index made (the WAL replays the rest), or refuse naming
/// its directory; it must never open with missing or altered data.
/// </summary>
public sealed class MvccCheckpointPowerLossTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly TempDir _tmp = new();

    public static TheoryData<int> Seeds() => [.. Enumerable.Range(1, 16)];

    public static TheoryData<int> FirstCheckpointSeeds() => [.. Enumerable.Range(1, 8)];

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task A_power_cut_during_checkpoints_leaves_the_state_of_a_completed_checkpoint_or_later(int seed) =>
        CutDuringCheckpointsAsync(seed, cuts: 2, firstCheckpointOnly: false);

    /// <summary>
    /// Before its first checkpoint a store's writes are only in its log (and the WAL, which nothing has truncated
    /// yet): a cut inside that checkpoint must leave a store that opens, at index 0 or at the checkpoint if it
    /// completed, not one that refuses to open over the half-written checkpoint.
    /// </summary>
    [Theory]
    [MemberData(nameof(FirstCheckpointSeeds))]
    public Task A_power_cut_during_the_first_checkpoint_leaves_a_store_that_opens(int seed) =>
        CutDuringCheckpointsAsync(seed, cuts: 1, firstCheckpointOnly: true);

    private async Task CutDuringCheckpointsAsync(int seed, int cuts, bool firstCheckpointOnly)
    {
        var rng = new Random(seed);
        var dir = _tmp.Sub("kv");
        for (var cut = 0; cut < cuts; cut++)
        {
            var power = new PowerDomain();
            PowerLossDevice? log = null;
            var store = Open(dir, inner => log = power.Wrap(inner), power.Wrap);
            var next = (int)store.ConsistentIndex + 1;

            // One writer: batches of writes, each followed by a checkpoint; the cut comes after a few checkpoints,
            // at a moment with log writes in flight.
            var checkpointed = (int)store.ConsistentIndex;
            var checkpoints = 0;
            var checkpointsBeforeCut = firstCheckpointOnly ? 0 : rng.Next(1, 6);
            // Half the cuts wait for a write to the log in flight, half for one to a checkpoint file (which, the
            // index table being written whole each time, would otherwise take nearly every cut).
            Func<PowerLossDevice, bool> cutDuring = rng.Next(2) == 0 ? d => d == log : d => d != log;
            // A thread of its own: after the cut it may wait forever on a flush that never completes.
            var writerRng = new Random(rng.Next());
            var writer = new Thread(() =>
            {
                for (var batch = 0; batch < 1000 && !power.IsCut; batch++)
                {
                    for (var k = writerRng.Next(5, 60); k > 0 && !power.IsCut; k--)
                    {
                        CheckpointDamageSweepTests.Write(store, next++);
                    }

                    store.Checkpoint();
                    if (!power.IsCut)
                    {
                        Volatile.Write(ref checkpointed, (int)store.ConsistentIndex);
                        Interlocked.Increment(ref checkpoints);
                    }
                }
            }) { IsBackground = true, Name = $"mvcc-power-loss-{seed}-{cut}" };
            writer.Start();

            var deadline = DateTime.UtcNow + Bound;
            while ((Volatile.Read(ref checkpoints) < checkpointsBeforeCut || power.InFlight(cutDuring) == 0) && writer.IsAlive && DateTime.UtcNow < deadline)
            {
                Thread.SpinWait(50); // looking for a moment with writes in flight; bounded by the deadline
            }

            // The machine stops: the store is abandoned as a dead process would leave it (not closed, no checkpoint).
            power.CutPower(freeze: true);
            var logInFlight = log!.InFlight;
            var checkpointInFlight = power.InFlight(d => d != log);
            var durable = Volatile.Read(ref checkpointed);
            var changed = await power.ApplyLossAsync(rng, Bound);
            output.WriteLine($"cut {cut}: {checkpoints} checkpoints completed (last at index {durable}), {next - 1} writes, {logInFlight} log and {checkpointInFlight} checkpoint file writes in flight, {changed} sectors rolled back");

            // Restart from what reached the disk. Before the first checkpoint completed, the WAL (not simulated here)
            // would still hold every write, as the server then tells the store; after it, it may not.
            var walHoldsEveryWrite = durable == 0 && cut == 0;
            using var reopened = await Task.Run(() => Open(dir, null, null, walHoldsEveryWrite)).WaitAsync(Bound);
            var index = (int)reopened.ConsistentIndex;
            output.WriteLine($"  reopened at consistent index {index}");
            index.Should().BeGreaterThanOrEqualTo(durable, "a checkpoint that completed survives the power cut (seed {0}, cut {1})", seed, cut);
            reopened.CurrentRevision.Should().Be(index + 1);
            CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(index), "the store holds exactly the state at its consistent index {0} (seed {1}, cut {2})", index, seed, cut);
        }
    }

    private static MvccStore Open(string dir, Func<FASTER.core.IDevice, FASTER.core.IDevice>? wrapLog, Func<FASTER.core.IDevice, FASTER.core.IDevice>? wrapCheckpoint, bool logHoldsEveryWrite = false) =>
        MvccStore.Open(
            new MvccStoreOptions
            {
                DataDirectory = dir, MemorySizeBits = 16, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8,
                WrapLogDevice = wrapLog, WrapCheckpointDevice = wrapCheckpoint, LogHoldsEveryWrite = logHoldsEveryWrite,
            },
            NullLogger.Instance);
}
