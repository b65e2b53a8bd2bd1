using FASTER.core;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Tests.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KvStore.Storage.Tests.PowerLoss;

/// <summary>
/// Power cuts inside the checkpoints that hold writes off only until their version switch — the final log checkpoint of
/// a defragmentation, and the raft host's periodic checkpoint (<see cref="MvccStore.CheckpointWhileWritingAsync"/>):
/// from then on the writer commits txns while the checkpoint's last flush and metadata are still being written.
/// A writer commits txns throughout (raft index i = write i, see <see cref="CheckpointDamageSweepTests.Write"/>); the
/// power goes (writes to the log and to every checkpoint file in flight frozen, then dropped or torn at sector
/// granularity; the cut store's later writes never reach the disk) at a chosen point of that checkpoint. On restart the store must hold exactly the state at its consistent index, and that index must be one
/// of the two checkpoints and no older than the last one known to be committed at the cut (the raft log keeps every
/// entry after it until the applier's next checkpoint, so no acknowledged write is lost).
/// </summary>
public sealed class DefragCheckpointPowerLossTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly TempDir _tmp = new();
    private readonly List<PowerDomain> _domains = [];

    public enum CutPoint
    {
        /// <summary>Inside the version switch: the final address is fixed, its flush issued (maybe done), its metadata not written.</summary>
        AtVersionSwitch,

        /// <summary>
        /// The log's power goes before the final flush is issued, which a txn open when the checkpoint reached the gate
        /// gives something to write; the writer must then commit 20 txns (writes are not held off by that flush), and
        /// only then do the checkpoint files lose power. Cut with the log, the metadata write that follows an already
        /// finished flush would freeze FasterKV's state transition and the writer with it, hiding what this case checks.
        /// </summary>
        AfterWritesPastVersionSwitch,

        /// <summary>Right after the checkpoint's metadata is committed, writes of the next version in flight.</summary>
        AfterMetadataCommit,

        /// <summary>When the checkpoint is complete, with the segment files below the new begin address being deleted.</summary>
        AtCompletion,

        /// <summary>After a seeded number of writes past the version switch, wherever the checkpoint is by then.</summary>
        Random,
    }

    public enum Checkpointer
    {
        /// <summary><see cref="MvccStore.DefragmentAsync"/>: a log compaction, then its checkpoint.</summary>
        Defragment,

        /// <summary><see cref="MvccStore.CheckpointWhileWritingAsync"/>: the checkpoint alone.</summary>
        WhileWriting,
    }

    public static TheoryData<Checkpointer, CutPoint, int> Cases()
    {
        var cases = new TheoryData<Checkpointer, CutPoint, int>();
        foreach (var checkpointer in Enum.GetValues<Checkpointer>())
        {
            foreach (var point in Enum.GetValues<CutPoint>())
            {
                foreach (var seed in point == CutPoint.Random ? [1, 2, 3, 4, 5, 6] : new[] { 1, 2 })
                {
                    cases.Add(checkpointer, point, seed);
                }
            }
        }

        return cases;
    }

    public void Dispose()
    {
        // The cut store may be blocked at a frozen write while holding its epoch, its other threads spinning on it, for
        // the rest of the run (later cases then missed their switch); once the restart is closed, it may finish.
        foreach (var domain in _domains)
        {
            domain.ReleaseDiscarding();
        }

        _tmp.Dispose();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task A_power_cut_inside_a_checkpoint_past_its_version_switch_loses_no_checkpointed_write_and_leaves_an_exact_state(Checkpointer checkpointer, CutPoint point, int seed)
    {
        var rng = new Random(seed);
        var dir = _tmp.Sub("kv");
        // The checkpoint files lose power too: the cut store goes on with its checkpoint, and what it writes after the
        // cut (a metadata commit, then the removal of the segments it made obsolete) must not reach the disk. Two
        // domains, cut together except in AfterWritesPastVersionSwitch.
        var logPower = NewDomain();
        var checkpointPower = NewDomain();
        var store = Open(dir, logPower.Wrap, checkpointPower.Wrap);

        // History to copy forward: thousands of records over many 64 KiB segments, checkpointed.
        var next = 1;
        for (; next <= 3000; next++)
        {
            CheckpointDamageSweepTests.Write(store, next);
        }

        store.Checkpoint();
        var previous = (int)store.ConsistentIndex;

        var acknowledged = 0;          // last write committed by the writer
        var stopped = false;
        var atSwitch = -1;             // consistent index the new checkpoint holds (writes are held off at its switch)
        var ackAtSwitch = -1;
        var committed = previous;      // last checkpoint whose metadata is committed
        var arm = false;               // AfterWritesPastVersionSwitch: the writer's next txn waits for the checkpoint at the gate
        var armed = new ManualResetEventSlim();
        var txnOpenAtGate = false;
        var cut = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var switched = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void CutAll()
        {
            logPower.CutPower(freeze: true);
            checkpointPower.CutPower(freeze: true);
            cut.TrySetResult();
        }

        store.OnCheckpointPhaseForTest = phase =>
        {
            switch (phase)
            {
                case Phase.IN_PROGRESS when atSwitch < 0 && point == CutPoint.AfterWritesPastVersionSwitch:
                    // Writes are held off until WAIT_FLUSH, whose own work issues the final flush (and may finish it)
                    // before this hook runs for it: cut here, so that flush stays pending.
                    logPower.CutPower(freeze: true);
                    break;
                case Phase.WAIT_FLUSH when atSwitch < 0:
                    // Asserted below, not here: this runs inside FasterKV's state transition.
                    Volatile.Write(ref ackAtSwitch, Volatile.Read(ref acknowledged));
                    Volatile.Write(ref atSwitch, (int)store.ConsistentIndex);
                    switched.TrySetResult();
                    if (point == CutPoint.AtVersionSwitch)
                    {
                        CutAll();
                    }

                    break;
                case Phase.PERSISTENCE_CALLBACK when atSwitch >= 0:
                    // FASTER calls this after writing the checkpoint's metadata.
                    Volatile.Write(ref committed, atSwitch);
                    if (point == CutPoint.AfterMetadataCommit)
                    {
                        CutAll();
                    }

                    break;
                case Phase.REST when atSwitch >= 0 && point == CutPoint.AtCompletion:
                    CutAll();
                    break;
            }
        };

        // The writer: a thread of its own, since after the cut it may wait forever for a flush that never completes.
        var writer = new Thread(() =>
        {
            // It keeps committing after a cut at the version switch (the flush it must not wait for is frozen); other
            // cuts end it, as the machine is gone.
            // Back to back, as an applier with a backlog: the checkpoint waiting for the txn gate still goes next.
            for (var i = next; i < next + 200_000 && (!logPower.IsCut || point == CutPoint.AfterWritesPastVersionSwitch) && !Volatile.Read(ref stopped); i++)
            {
                // Acknowledged before the txn closes, so the checkpoint's switch never falls between commit and acknowledgement.
                var written = i;
                CheckpointDamageSweepTests.Write(store, i, () => Volatile.Write(ref acknowledged, written), () =>
                {
                    if (Volatile.Read(ref arm))
                    {
                        // Writes only once the log checkpoint waits at the gate, after its last flush before it: the
                        // final flush then has this txn to write, and the cut at IN_PROGRESS freezes it.
                        Volatile.Write(ref arm, false);
                        armed.Set();
                        Volatile.Write(ref txnOpenAtGate, SpinWait.SpinUntil(() => store.TxnGateHoldersWaitingForTest > 0, Bound));
                    }
                });
            }
        }) { IsBackground = true, Name = $"checkpoint-power-loss-{checkpointer}-{point}-{seed}" };
        if (point == CutPoint.AfterWritesPastVersionSwitch)
        {
            store.BeforeCheckpointGateForTest = () =>
            {
                Volatile.Write(ref arm, true);
                armed.Wait(Bound); // the writer's txn is open before the checkpoint queues at the gate
            };
        }

        writer.Start();

        // Both run on the store's background chain; after a cut they may never finish (the machine is gone).
        var seenAtSwitch = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var checkpoint = checkpointer == Checkpointer.Defragment
            ? store.DefragmentAsync()
            : store.CheckpointWhileWritingAsync(() => seenAtSwitch.TrySetResult((int)store.ConsistentIndex));
        await switched.Task.WaitAsync(Bound);
        atSwitch.Should().Be(ackAtSwitch, "the checkpoint's version holds every write committed before its switch, and no txn is open at it");
        atSwitch.Should().BeGreaterThan(previous);
        if (point == CutPoint.AfterWritesPastVersionSwitch)
        {
            Volatile.Read(ref txnOpenAtGate).Should().BeTrue("a txn was open when the log checkpoint reached the txn gate");
        }

        var pastSwitch = point switch
        {
            CutPoint.AfterWritesPastVersionSwitch => 20,
            CutPoint.Random => rng.Next(0, 400),
            _ => 0,
        };
        if (pastSwitch > 0)
        {
            var deadline = DateTime.UtcNow + Bound;
            while (Volatile.Read(ref acknowledged) < atSwitch + pastSwitch && writer.IsAlive && DateTime.UtcNow < deadline)
            {
                Thread.SpinWait(50); // bounded by the deadline
            }

            Volatile.Read(ref acknowledged).Should().BeGreaterThanOrEqualTo(atSwitch + pastSwitch, "the writer commits while the checkpoint's flush is frozen or under way");
        }

        if (point is CutPoint.Random or CutPoint.AfterWritesPastVersionSwitch)
        {
            CutAll();
        }

        await cut.Task.WaitAsync(Bound);
        Volatile.Write(ref stopped, true);
        var durable = Volatile.Read(ref committed);
        var changed = await logPower.ApplyLossAsync(rng, Bound) + await checkpointPower.ApplyLossAsync(rng, Bound);
        if (point is CutPoint.AfterMetadataCommit or CutPoint.AtCompletion)
        {
            // Past its metadata commit the checkpoint no longer needs the log device and finishes. Until then FASTER
            // holds its files open (locked), and the restart below would skip a checkpoint a real restart finds: two
            // instances never share a data dir in the server (the member's lock), and a power cut ends the first one.
            await checkpoint.WaitAsync(Bound);
        }
        output.WriteLine($"{checkpointer} {point} seed {seed}: previous checkpoint at {previous}, new checkpoint at {atSwitch}, committed {durable}, {Volatile.Read(ref acknowledged)} writes acknowledged, checkpoint {(checkpoint.IsCompleted ? "done" : "not done")}, {changed} sectors rolled back");
        if (checkpointer == Checkpointer.WhileWriting)
        {
            (await seenAtSwitch.Task.WaitAsync(Bound)).Should().Be(atSwitch, "the caller's callback runs at the version switch, seeing the state the checkpoint holds");
            if (checkpoint.IsCompletedSuccessfully)
            {
                (await (Task<ulong>)checkpoint).Should().Be((ulong)atSwitch, "the checkpoint reports the consistent index it holds");
            }
        }

        using var reopened = await Task.Run(() => Open(dir, null, null)).WaitAsync(Bound);
        var index = (int)reopened.ConsistentIndex;
        output.WriteLine($"  reopened at consistent index {index}");
        index.Should().BeGreaterThanOrEqualTo(durable, "a committed checkpoint survives the cut");
        index.Should().BeOneOf([previous, atSwitch], "recovery finds a checkpoint's state, nothing of the next version");
        if (point is CutPoint.AtVersionSwitch or CutPoint.AfterWritesPastVersionSwitch)
        {
            // For AfterWritesPastVersionSwitch also the proof that its flush was frozen: the checkpoint files had power.
            index.Should().Be(previous, "the new checkpoint's metadata is written after its switch and its final flush, so after this cut");
        }

        reopened.CurrentRevision.Should().Be(index + 1);
        CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(index), "the store holds exactly the state at its consistent index {0}", index);
    }

    /// <summary>
    /// The order that lost the oldest history (Defragment, Random, seed 5): the cut came after the defrag checkpoint's
    /// final flush but before its metadata commit, the restart chose the previous checkpoint, and then the cut store
    /// (which a real power cut stops) committed its checkpoint and removed the segments below the new begin address,
    /// under the restarted store, whose reads of them then found nothing. Forced here: no writer, so the final flush has
    /// nothing to write and the cut store goes straight on to its metadata commit once it leaves the switch, which it
    /// does only after the restart opened.
    /// </summary>
    [Fact]
    public async Task A_store_cut_at_its_defrag_checkpoints_switch_changes_nothing_under_the_restarted_store()
    {
        var dir = _tmp.Sub("kv");
        var power = NewDomain();
        var store = Open(dir, power.Wrap, power.Wrap);
        for (var i = 1; i <= 3000; i++)
        {
            CheckpointDamageSweepTests.Write(store, i);
        }

        store.Checkpoint();
        var cut = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var restarted = new ManualResetEventSlim();
        store.OnCheckpointPhaseForTest = phase =>
        {
            if (phase == Phase.WAIT_FLUSH && !cut.Task.IsCompleted)
            {
                power.CutPower(freeze: true);
                cut.TrySetResult();
                restarted.Wait(Bound); // inside FasterKV's transition: the cut store goes on only after the restart opened
            }
        };

        var defrag = store.DefragmentAsync();
        try
        {
            await cut.Task.WaitAsync(Bound);
            await power.ApplyLossAsync(new Random(1), Bound);
            using var reopened = await Task.Run(() => Open(dir, null, null)).WaitAsync(Bound);
            reopened.ConsistentIndex.Should().Be(3000UL, "the defrag's checkpoint was not committed at the cut");

            restarted.Set();
            // The cut store either finishes (its commit and removals reached the disk) or stops at its first write.
            await Task.WhenAny(defrag, power.WriteAfterCut).WaitAsync(Bound);
            CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(3000), "nothing the cut store does after the cut reaches the disk");
        }
        finally
        {
            restarted.Set();
        }
    }

    [Fact]
    public async Task Writes_committed_while_the_defrag_checkpoint_completes_are_replayable_and_a_later_checkpoint_keeps_them()
    {
        var dir = _tmp.Sub("kv");
        var store = Open(dir, null, null);
        var next = 1;
        for (; next <= 2000; next++)
        {
            CheckpointDamageSweepTests.Write(store, next);
        }

        var last = next - 1;
        var writer = Task.Run(() =>
        {
            // Until well after the checkpoint: the next checkpoint must wait for the defrag's to finish, not fail.
            for (var i = next; i < next + 3000; i++)
            {
                CheckpointDamageSweepTests.Write(store, i);
                Volatile.Write(ref last, i);
                if (i % 500 == 0)
                {
                    store.Checkpoint();
                }
            }
        });
        await store.DefragmentAsync().WaitAsync(Bound);
        await writer.WaitAsync(Bound);
        store.LogCompactions.Should().Be(1);
        store.Checkpoint();
        store.CloseWithoutCheckpoint();

        using var reopened = Open(dir, null, null);
        ((int)reopened.ConsistentIndex).Should().Be(last);
        CheckpointDamageSweepTests.Describe(reopened).Should().Equal(CheckpointDamageSweepTests.Expected(last));
    }

    private PowerDomain NewDomain()
    {
        var domain = new PowerDomain();
        _domains.Add(domain);
        return domain;
    }

    private static MvccStore Open(string dir, Func<IDevice, IDevice>? wrapLog, Func<IDevice, IDevice>? wrapCheckpoint) =>
        MvccStore.Open(
            new MvccStoreOptions
            {
                DataDirectory = dir, MemorySizeBits = 18, PageSizeBits = 12, SegmentSizeBits = 16, IndexBuckets = 1 << 10,
                WrapLogDevice = wrapLog, WrapCheckpointDevice = wrapCheckpoint,
            },
            NullLogger.Instance);
}
