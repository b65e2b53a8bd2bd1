using KvStore.Raft;
using KvStore.Raft.Storage;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging;
using RaftSnapshot = KvStore.Raft.Snapshot;

namespace KvStore.Storage.Raft;

/// <summary>
/// The raft log on the WAL: every change is appended to the <see cref="WriteAheadLog"/> (made durable by
/// <see cref="SyncAsync"/>, once per Ready) and mirrored in memory, which serves <see cref="Entries"/> and
/// <see cref="Term"/> without disk reads. Memory holds the entries after the last snapshot/compaction point:
/// <c>_entries[0]</c> stands for that point (its index and term, no data), <c>_entries[k]</c> is index <c>Offset + k</c>.
/// Thread-safe (one lock): the node loop saves and reads, the apply loop may compact.
/// </summary>
public sealed class RaftLogStore : IRaftStorage
{
    private readonly WriteAheadLog _wal;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly List<Entry> _entries = [new Entry()];
    private HardState _hardState;
    private RaftSnapshot _snapshot = RaftSnapshot.Empty;

    private RaftLogStore(WriteAheadLog wal, ILogger logger)
    {
        _wal = wal;
        _logger = logger;
    }

    private ulong Offset => _entries[0].Index;

    /// <summary>
    /// Rebuilds the raft log from what <paramref name="wal"/> replayed at open: the last hard state, the last snapshot
    /// marker (index, term and membership) and the entries after it (a later record for index i already replaced
    /// every earlier one at index &gt;= i).
    /// </summary>
    /// <exception cref="InvalidDataException">The replayed entries do not follow the snapshot marker contiguously.</exception>
    public static RaftLogStore Open(WriteAheadLog wal, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(wal);
        ArgumentNullException.ThrowIfNull(logger);
        var store = new RaftLogStore(wal, logger);
        var replay = wal.Replay();
        if (replay.Snapshot is { } marker)
        {
            store._snapshot = new RaftSnapshot
            {
                Metadata = new SnapshotMetadata
                {
                    Index = marker.Index,
                    Term = marker.Term,
                    ConfState = new ConfState { Voters = [.. marker.Voters], Learners = [.. marker.Learners] },
                },
            };
            store._entries[0] = new Entry { Index = marker.Index, Term = marker.Term };
        }

        if (replay.HardState is { } hs)
        {
            store._hardState = new HardState(hs.Term, hs.Vote, hs.Commit);
        }

        foreach (var e in replay.Entries)
        {
            if (e.Index != store.LastIndexLocked() + 1)
            {
                throw new InvalidDataException(
                    $"WAL in '{wal.Directory}' holds entry {e.Index} after index {store.LastIndexLocked()} (snapshot marker {store.Offset}): "
                    + "entries before it were released without a snapshot marker covering them");
            }

            store._entries.Add(ToEntry(e, wal.Directory));
        }

        logger.LogInformation(
            "Raft log opened from WAL: snapshot {SnapIndex}/{SnapTerm} {Conf}, entries [{First}, {Last}], hard state term {Term} vote {Vote} commit {Commit}",
            store.Offset,
            store._entries[0].Term,
            store._snapshot.Metadata.ConfState,
            store.Offset + 1,
            store.LastIndexLocked(),
            store._hardState.Term,
            store._hardState.Vote,
            store._hardState.Commit);
        return store;
    }

    /// <summary>The hard state saved last (durable once <see cref="SyncAsync"/> returned).</summary>
    public HardState HardState
    {
        get
        {
            lock (_gate)
            {
                return _hardState;
            }
        }
    }

    /// <inheritdoc/>
    public RaftInitialState InitialState()
    {
        lock (_gate)
        {
            return new RaftInitialState(_hardState, _snapshot.Metadata.ConfState);
        }
    }

    /// <inheritdoc/>
    public StorageStatus Entries(ulong lo, ulong hi, ulong maxSize, out IReadOnlyList<Entry> entries)
    {
        entries = [];
        lock (_gate)
        {
            if (lo <= Offset)
            {
                return StorageStatus.Compacted;
            }

            if (hi > LastIndexLocked() + 1)
            {
                return StorageStatus.Unavailable;
            }

            var result = new List<Entry>();
            ulong size = 0;
            for (var i = lo; i < hi; i++)
            {
                var e = _entries[(int)(i - Offset)];
                size += SizeOf(e);
                if (result.Count > 0 && size > maxSize)
                {
                    break;
                }

                result.Add(e);
            }

            entries = result;
            return StorageStatus.Ok;
        }
    }

    /// <inheritdoc/>
    public StorageStatus Term(ulong index, out ulong term)
    {
        term = 0;
        lock (_gate)
        {
            if (index < Offset)
            {
                return StorageStatus.Compacted;
            }

            if (index - Offset >= (ulong)_entries.Count)
            {
                return StorageStatus.Unavailable;
            }

            term = _entries[(int)(index - Offset)].Term;
            return StorageStatus.Ok;
        }
    }

    /// <inheritdoc/>
    public ulong FirstIndex()
    {
        lock (_gate)
        {
            return Offset + 1;
        }
    }

    /// <inheritdoc/>
    public ulong LastIndex()
    {
        lock (_gate)
        {
            return LastIndexLocked();
        }
    }

    /// <inheritdoc/>
    public StorageStatus Snapshot(out RaftSnapshot snapshot)
    {
        lock (_gate)
        {
            snapshot = _snapshot;
            return StorageStatus.Ok;
        }
    }

    /// <summary>
    /// Persists one Ready: the snapshot (if any, see <see cref="ApplySnapshot"/>), then the entries (an entry at index i
    /// replaces every stored entry at index &gt;= i), then the hard state — in that order, so a torn write never leaves a
    /// hard state whose commit index is ahead of the entries. Appended to the WAL, not yet durable: await
    /// <see cref="SyncAsync"/> before sending messages that depend on it (group commit: one sync per Ready).
    /// </summary>
    public void Save(HardState? hardState, IReadOnlyList<Entry> entries, RaftSnapshot? snapshot)
    {
        ArgumentNullException.ThrowIfNull(entries);
        lock (_gate)
        {
            if (snapshot is { IsEmpty: false })
            {
                ApplySnapshotLocked(snapshot);
            }

            AppendLocked(entries);
            if (hardState is { } hs)
            {
                _wal.Append(new WalHardState(hs.Term, hs.Vote, hs.Commit));
                _hardState = hs;
            }
        }
    }

    /// <summary>Makes everything saved so far durable (one WAL group commit shared by concurrent callers).</summary>
    public ValueTask SyncAsync(CancellationToken cancellationToken = default) => _wal.SyncAsync(cancellationToken);

    /// <summary>
    /// Installs a snapshot received from the leader: records a snapshot marker that replaces the whole local log (on
    /// replay it discards every entry before it) and drops every entry in memory. Install the state machine from the
    /// snapshot data first (MvccStore.RestoreFromSnapshotFile), then call this and sync. Ignored (false) when the
    /// snapshot is not newer than the current one.
    /// </summary>
    public bool ApplySnapshot(RaftSnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        lock (_gate)
        {
            return ApplySnapshotLocked(snapshot);
        }
    }

    /// <summary>
    /// Records that the local state machine is checkpointed through <paramref name="index"/> (which must be in the log)
    /// with membership <paramref name="confState"/>: appends a snapshot marker (index, its term, the membership) that
    /// restarts use as their starting point, and makes it what <see cref="Snapshot"/> reports (without data: the
    /// server streams the MVCC snapshot file). Call after MvccStore.Checkpoint, then <see cref="SyncAsync"/>, then
    /// <see cref="Compact"/>.
    /// </summary>
    public RaftSnapshot CreateSnapshot(ulong index, ConfState confState)
    {
        ArgumentNullException.ThrowIfNull(confState);
        lock (_gate)
        {
            if (index <= _snapshot.Metadata.Index)
            {
                return _snapshot;
            }

            if (index < Offset || index > LastIndexLocked())
            {
                throw new InvalidOperationException($"raft log: snapshot {index} is out of bounds [{Offset}, {LastIndexLocked()}]");
            }

            var term = _entries[(int)(index - Offset)].Term;
            _wal.Append(new WalSnapshotMarker(index, term) { Voters = [.. confState.Voters], Learners = [.. confState.Learners] });
            _snapshot = new RaftSnapshot { Metadata = new SnapshotMetadata { Index = index, Term = term, ConfState = confState } };
            return _snapshot;
        }
    }

    /// <summary>
    /// Discards entries before <paramref name="compactIndex"/> from memory (its term stays available) and releases the
    /// WAL records before it. <paramref name="compactIndex"/> must not be past the last snapshot marker
    /// (<see cref="CreateSnapshot"/> or an installed snapshot), so a restart always finds a marker covering what was
    /// released. The marker must be durable (synced) first.
    /// </summary>
    public void Compact(ulong compactIndex)
    {
        lock (_gate)
        {
            if (compactIndex <= Offset)
            {
                return;
            }

            if (compactIndex > _snapshot.Metadata.Index)
            {
                throw new InvalidOperationException(
                    $"raft log: compact {compactIndex} is past the last snapshot {_snapshot.Metadata.Index}; create a snapshot first");
            }

            var k = (int)(compactIndex - Offset);
            var term = _entries[k].Term;
            _entries.RemoveRange(0, k);
            _entries[0] = new Entry { Index = compactIndex, Term = term };
            _wal.ReleaseBefore(compactIndex + 1);
        }

        _logger.LogInformation("Raft log compacted through index {Index}", compactIndex);
    }

    private bool ApplySnapshotLocked(RaftSnapshot snapshot)
    {
        var meta = snapshot.Metadata;
        if (meta.Index <= _snapshot.Metadata.Index)
        {
            return false;
        }

        _wal.Append(new WalSnapshotMarker(meta.Index, meta.Term)
        {
            Voters = [.. meta.ConfState.Voters],
            Learners = [.. meta.ConfState.Learners],
            ReplacesLog = true,
        });
        _snapshot = new RaftSnapshot { Metadata = meta };
        _entries.Clear();
        _entries.Add(new Entry { Index = meta.Index, Term = meta.Term });
        return true;
    }

    private void AppendLocked(IReadOnlyList<Entry> entries)
    {
        foreach (var e in entries)
        {
            if (e.Index <= Offset)
            {
                continue;
            }

            if (e.Index > LastIndexLocked() + 1)
            {
                throw new InvalidOperationException($"raft log: missing log entry [last: {LastIndexLocked()}, append at: {e.Index}]");
            }

            var k = (int)(e.Index - Offset);
            if (k < _entries.Count)
            {
                _entries.RemoveRange(k, _entries.Count - k);
            }

            _wal.Append(new WalEntry(e.Index, e.Term, (byte)e.Type, e.Data));
            _entries.Add(e);
        }
    }

    private ulong LastIndexLocked() => Offset + (ulong)_entries.Count - 1;

    // The raft core's own size measure for batch limits (Entry.Size): payload + 24.
    private static ulong SizeOf(Entry e) => (ulong)e.Data.Length + 24;

    private static Entry ToEntry(WalEntry e, string directory) => e.Type switch
    {
        (byte)EntryType.Normal or (byte)EntryType.ConfChange => new Entry { Index = e.Index, Term = e.Term, Type = (EntryType)e.Type, Data = e.Data },
        _ => throw new InvalidDataException($"WAL in '{directory}': entry {e.Index} has unknown type {e.Type}"),
    };
}
