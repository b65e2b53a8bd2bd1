using System.Text;
using KvStore.Storage.Backend;
using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Mvcc;

public sealed partial class MvccStore
{
    private readonly object _physicalGate = new();
    private Task _physical = Task.CompletedTask;
    private long _physicalScheduledRevision;
    private readonly List<List<Revision>> _pendingDeletes = [];

    /// <summary>
    /// Compacts at revision (etcd rules): Error Compacted when revision &lt;= CompactRevision, FutureRevision when
    /// revision &gt; CurrentRevision. Logical compaction (reads below it fail, index history dropped) is immediate;
    /// physical removal of superseded revisions from FasterKV runs in the background (see PhysicalCompactionDone).
    /// Writer-only (the applier). etcd's compactMainRev starts at -1, so compacting at 0 a store that was never
    /// compacted succeeds (there is nothing below revision 0 to drop: a no-op that changes no state).
    /// </summary>
    public CompactResult Compact(long revision)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var current = CurrentRevision;
        if (revision == 0 && CompactRevision == 0)
        {
            return new CompactResult(MvccError.None, 0, current);
        }

        if (revision <= CompactRevision)
        {
            return new CompactResult(MvccError.Compacted, CompactRevision, current);
        }

        if (revision > current)
        {
            return new CompactResult(MvccError.FutureRevision, CompactRevision, current);
        }

        List<Revision> doomed = [];
        _txnGate.EnterHolder();
        try
        {
            MutateIndex(() =>
            {
                Volatile.Write(ref _compactRevision, revision);
                doomed = CompactIndex(revision);
            });
            SaveState(ConsistentIndex);
            SchedulePhysical(revision, doomed);
        }
        finally
        {
            _txnGate.Exit();
        }

        _logger.LogDebug("Compacted at revision {Revision}: {Count} revisions to remove physically", revision, doomed.Count);
        return new CompactResult(MvccError.None, revision, current);
    }

    /// <summary>Completes when every revision made obsolete by compactions up to revision is gone from FasterKV.</summary>
    public Task PhysicalCompactionDone(long revision)
    {
        lock (_physicalGate)
        {
            return _physical;
        }
    }

    /// <summary>
    /// etcd 3.4's HashKV (mvcc/kvstore.go HashByRev): CRC-32C over the bucket name "key" and then, in revision order,
    /// each stored record's bolt key (17 bytes, plus 't' for tombstones) and mvccpb value, for records with
    /// main revision &lt;= revision, skipping those at or below the compact revision unless compaction at
    /// revision would keep them (when that keep set is empty nothing is skipped).
    /// </summary>
    public HashKVResult HashKV(long revision)
    {
        WaitPhysicalCompaction();
        Span<byte> rk = stackalloc byte[17];
        Span<byte> bolt = stackalloc byte[18];

        // The whole hash runs in the shift read lock: a concurrent RestoreFrom waits, so revisions, index and records
        // all come from one state.
        _shiftLock.EnterReadLock();
        var session = RentSession();
        try
        {
            var current = CurrentRevision;
            var compact = CompactRevision;
            if (revision > 0 && revision <= compact)
            {
                return new HashKVResult(MvccError.Compacted, 0, compact, current);
            }

            if (revision > current)
            {
                return new HashKVResult(MvccError.FutureRevision, 0, compact, current);
            }

            if (revision == 0)
            {
                revision = current;
            }

            var keep = new HashSet<Revision>();
            _lock.EnterReadLock();
            try
            {
                foreach (var ki in _index)
                {
                    ki.Keep(revision, keep);
                }
            }
            finally
            {
                _lock.ExitReadLock();
            }

            var crc = Crc32C.Create();
            crc.Append("key"u8);
            void Add(Revision rev, byte[] record, Span<byte> boltKey, ref Crc32C h)
            {
                rev.WriteBoltKey(boltKey);
                var len = Revision.BoltKeySize;
                if (record[0] == FlagTombstone)
                {
                    boltKey[len++] = (byte)'t';
                }

                h.Append(boltKey[..len]);
                h.Append(record.AsSpan(1));
            }

            if (keep.Count > 0)
            {
                var olds = keep.Where(r => r.Main <= compact).ToList();
                olds.Sort();
                foreach (var rev in olds)
                {
                    WriteRevisionKey(rk, rev);
                    if (FasterBackend.TryRead(session, rk, out var record))
                    {
                        Add(rev, record, bolt, ref crc);
                    }
                }
            }

            for (var main = keep.Count > 0 ? compact + 1 : 1; main <= revision; main++)
            {
                for (long sub = 0; ; sub++)
                {
                    var rev = new Revision(main, sub);
                    WriteRevisionKey(rk, rev);
                    if (!FasterBackend.TryRead(session, rk, out var record))
                    {
                        break;
                    }

                    Add(rev, record, bolt, ref crc);
                }
            }

            // etcd reports compact_revision -1 when the store was never compacted.
            return new HashKVResult(MvccError.None, crc.Current, compact == 0 ? -1 : compact, current);
        }
        finally
        {
            _readerSessions.Add(session);
            _shiftLock.ExitReadLock();
        }
    }

    /// <summary>Compacts every key index at revision; returns the stored revisions that are no longer needed. Caller holds the write lock.</summary>
    private List<Revision> CompactIndex(long revision)
    {
        var available = new HashSet<Revision>();
        var candidates = new List<Revision>();
        var empty = new List<KeyIndex>();
        foreach (var ki in _index)
        {
            foreach (var rev in ki.AllRevisions())
            {
                if (rev.Main <= revision)
                {
                    candidates.Add(rev);
                }
            }

            ki.Compact(revision, available);
            if (ki.IsEmpty)
            {
                empty.Add(ki);
            }
        }

        foreach (var ki in empty)
        {
            _index.Remove(ki);
        }

        candidates.RemoveAll(available.Contains);
        return candidates;
    }

    private void SchedulePhysical(long revision, List<Revision> doomed)
    {
        lock (_physicalGate)
        {
            // Log compaction copies these too until they are deleted, so their delete (and live-bytes accounting) still finds them.
            _pendingDeletes.Add(doomed);
            _physicalScheduledRevision = Math.Max(_physicalScheduledRevision, revision);
            _physical = _physical.ContinueWith(
                _ =>
                {
                    DeleteRevisions(doomed);
                    MaybeCompactLog();
                },
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default);
        }
    }

    private void DeleteRevisions(List<Revision> doomed)
    {
        using var session = _backend.NewSession();
        Span<byte> rk = stackalloc byte[17];
        foreach (var rev in doomed)
        {
            WriteRevisionKey(rk, rev);
            if (FasterBackend.TryRead(session, rk, out var record))
            {
                FasterBackend.Delete(session, rk);
                AddLiveBytes(-(record.Length + 17));
            }
        }

        lock (_physicalGate)
        {
            _pendingDeletes.Remove(doomed);
        }
    }

    /// <summary>Revisions scheduled for physical deletion and not deleted yet.</summary>
    private List<Revision> PendingDeletes()
    {
        lock (_physicalGate)
        {
            return [.. _pendingDeletes.SelectMany(d => d)];
        }
    }

    private void WaitPhysicalCompaction()
    {
        Task t;
        lock (_physicalGate)
        {
            t = _physical;
        }

        t.GetAwaiter().GetResult();
    }

    internal static string Printable(byte[] key) => Encoding.UTF8.GetString(key);
}
