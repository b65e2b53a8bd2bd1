namespace KvStore.Storage.Mvcc;

/// <summary>
/// The store's txn gate: held by the open write txn, or by work that holds writes off (a checkpoint's version switch,
/// a log compaction's cut and begin-address shift, a snapshot's listing, an MVCC compaction). A holder that is waiting
/// goes before the writer's next txn, so it waits for the open txn only.
/// Why not a bare semaphore: its release lets the releasing thread take it straight back while the woken waiter is
/// still being scheduled, so an applier committing txns back to back held a checkpoint or a defragment off for as long
/// as it had entries to apply (a minute of 200,000 txns on a loaded 2-core machine).
/// </summary>
internal sealed class TxnGate
{
    private readonly object _lock = new();
    private bool _held;
    private int _holdersWaiting;

    /// <summary>Holders waiting for the gate (tests: to know one is queued before the writer's next txn).</summary>
    public int HoldersWaiting
    {
        get
        {
            lock (_lock)
            {
                return _holdersWaiting;
            }
        }
    }

    /// <summary>For a write txn: waits until the gate is free and no holder is waiting for it.</summary>
    public void EnterWriter()
    {
        lock (_lock)
        {
            while (_held || _holdersWaiting > 0)
            {
                Monitor.Wait(_lock);
            }

            _held = true;
        }
    }

    /// <summary>For work that holds writes off: waits for the open txn (or another holder) only, never for the writer's next txn.</summary>
    public void EnterHolder()
    {
        lock (_lock)
        {
            _holdersWaiting++;
            try
            {
                while (_held)
                {
                    Monitor.Wait(_lock);
                }

                _held = true;
            }
            finally
            {
                _holdersWaiting--;
                if (!_held)
                {
                    Monitor.PulseAll(_lock); // interrupted while waiting: the writer need not wait for this holder
                }
            }
        }
    }

    public void Exit()
    {
        lock (_lock)
        {
            _held = false;
            Monitor.PulseAll(_lock);
        }
    }
}
