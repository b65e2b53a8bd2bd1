using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// Work that holds writes off (a checkpoint's version switch, a defragment's) waits for the open txn only: once it
/// waits for the txn gate, it goes before the writer's next txn, however fast the writer comes back. An applier with
/// a backlog commits txns back to back; when the releasing writer could take the gate straight back, a defragment
/// waited for 200,000 of them and missed its 60 s bound on a loaded 2-core machine.
/// </summary>
public sealed class TxnGateTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task A_checkpoint_waiting_for_the_open_txn_switches_before_the_writers_next_txn()
    {
        using var store = MvccStore.Open(
            new MvccStoreOptions { DataDirectory = _tmp.Sub("kv"), MemorySizeBits = 18, PageSizeBits = 12, SegmentSizeBits = 16, IndexBuckets = 1 << 10 },
            NullLogger.Instance);
        const int Held = 101;
        for (var i = 1; i < Held; i++)
        {
            CheckpointDamageSweepTests.Write(store, i);
        }

        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task<ulong>? checkpoint = null;
        var queued = true;
        var writes = 0;
        var writer = new Thread(() =>
        {
            // Write Held stays open until the checkpoint waits for the gate; then the writer commits back to back,
            // without a pause for the checkpoint, until the checkpoint is done.
            for (var i = Held; i < Held + 100_000 && Volatile.Read(ref checkpoint)?.IsCompleted != true; i++)
            {
                CheckpointDamageSweepTests.Write(store, i, () =>
                {
                    if (i == Held)
                    {
                        holding.SetResult();
                        queued = SpinWait.SpinUntil(() => store.TxnGateHoldersWaitingForTest > 0, Bound);
                    }
                });
                writes++;
            }
        }) { IsBackground = true, Name = "txn-gate-writer" };
        writer.Start();
        await holding.Task.WaitAsync(Bound);

        var atSwitch = 0UL;
        var started = store.CheckpointWhileWritingAsync(() => atSwitch = store.ConsistentIndex);
        Volatile.Write(ref checkpoint, started);
        var index = await started.WaitAsync(Bound);
        writer.Join(Bound).Should().BeTrue();
        queued.Should().BeTrue("the checkpoint waits for the gate while write {0} is open", Held);
        atSwitch.Should().Be(Held, "the checkpoint's switch comes right after the open txn, before the writer's next ({0} writes ran meanwhile)", writes);
        index.Should().Be(Held);
    }
}
