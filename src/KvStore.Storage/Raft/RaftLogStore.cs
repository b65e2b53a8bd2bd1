using KvStore.Raft;
using KvStore.Raft.Storage;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging;
using RaftSnapshot = KvStore.Raft.Snapshot;

namespace KvStore.Storage.Raft;

/// <summary>
/// The raft log on the WAL: every change is appended to the <see cref="WriteAheadLog"/> (made durable by
/// <see cref="SyncAsync"/>, once per Ready) and mirrored in an <see cref="InMemoryRaftStorage"/>, which serves
/// <see cref="Entries"/> and <see cref="Term"/> without disk reads and holds the entries after the last
/// snapshot/compaction point. Thread-safe (one lock): the node loop saves and reads, the apply loop may compact.
/// </summary>
public sealed class RaftLogStore : IRaftStorage
{
    private readonly WriteAheadLog _wal;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly InMemoryRaftStorage _memory = new();
    private readonly EntryPayloadArena _payloads = new();

    private RaftLogStore(WriteAheadLog wal, ILogger logger)
    {
        _wal = wal;
        _logger = logger;
    }

    // The snapshot/compaction point: the index just before the first retained entry.
    private ulong Offset => _memory.FirstIndex() - 1;

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
        var memory = store._memory;
        var replay = wal.Replay();
        if (replay.Snapshot is { } marker)
        {
            memory.ApplySnapshot(new RaftSnapshot
            {
                Metadata = new SnapshotMetadata
                {
                    Index = marker.Index,
                    Term = marker.Term,
                    ConfState = new ConfState { Voters = [.. marker.Voters], Learners = [.. marker.Learners] },
                },
            });
        }

        if (replay.HardState is { } hs)
        {
            memory.SetHardState(new HardState(hs.Term, hs.Vote, hs.Commit));
        }

        foreach (var e in replay.Entries)
        {
            if (e.Index != memory.LastIndex() + 1)
            {
                throw new InvalidDataException(
                    $"WAL in '{wal.Directory}' holds entry {e.Index} after index {memory.LastIndex()} (snapshot marker {store.Offset}): "
                    + "entries before it were released without a snapshot marker covering them");
            }

            memory.Append([store.Retained(e, wal.Directory)]);
        }

        memory.Term(store.Offset, out var snapTerm);
        memory.Snapshot(out var snapshot);
        logger.LogInformation(
            "Raft log opened from WAL: snapshot {SnapIndex}/{SnapTerm} {Conf}, entries [{First}, {Last}], hard state term {Term} vote {Vote} commit {Commit}",
            store.Offset,
            snapTerm,
            snapshot.Metadata.ConfState,
            memory.FirstIndex(),
            memory.LastIndex(),
            memory.HardState.Term,
            memory.HardState.Vote,
            memory.HardState.Commit);
        return store;
    }

    /// <summary>The hard state saved last (durable once <see cref="SyncAsync"/> returned).</summary>
    public HardState HardState
    {
        get
        {
            lock (_gate)
            {
                return _memory.HardState;
            }
        }
    }

    /// <inheritdoc/>
    public RaftInitialState InitialState()
    {
        lock (_gate)
        {
            return _memory.InitialState();
        }
    }

    /// <inheritdoc/>
    public StorageStatus Entries(ulong lo, ulong hi, ulong maxSize, out IReadOnlyList<Entry> entries)
    {
        lock (_gate)
        {
            return _memory.Entries(lo, hi, maxSize, out entries);
        }
    }

    /// <inheritdoc/>
    public StorageStatus Term(ulong index, out ulong term)
    {
        lock (_gate)
        {
            return _memory.Term(index, out term);
        }
    }

    /// <inheritdoc/>
    public ulong FirstIndex()
    {
        lock (_gate)
        {
            return _memory.FirstIndex();
        }
    }

    /// <inheritdoc/>
    public ulong LastIndex()
    {
        lock (_gate)
        {
            return _memory.LastIndex();
        }
    }

    /// <inheritdoc/>
    public StorageStatus Snapshot(out RaftSnapshot snapshot)
    {
        lock (_gate)
        {
            return _memory.Snapshot(out snapshot);
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
                _memory.SetHardState(hs);
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
            _memory.Snapshot(out var current);
            if (index <= current.Metadata.Index)
            {
                return current;
            }

            if (_memory.Term(index, out var term) != StorageStatus.Ok)
            {
                throw new InvalidOperationException($"raft log: snapshot {index} is out of bounds [{Offset}, {_memory.LastIndex()}]");
            }

            _wal.Append(new WalSnapshotMarker(index, term) { Voters = [.. confState.Voters], Learners = [.. confState.Learners] });
            return _memory.CreateSnapshot(index, confState, default);
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

            _memory.Snapshot(out var current);
            if (compactIndex > current.Metadata.Index)
            {
                throw new InvalidOperationException(
                    $"raft log: compact {compactIndex} is past the last snapshot {current.Metadata.Index}; create a snapshot first");
            }

            _memory.Compact(compactIndex);
            _wal.ReleaseBefore(compactIndex + 1);
        }

        _logger.LogInformation("Raft log compacted through index {Index}", compactIndex);
    }

    private bool ApplySnapshotLocked(RaftSnapshot snapshot)
    {
        var meta = snapshot.Metadata;
        _memory.Snapshot(out var current);
        if (meta.Index <= current.Metadata.Index)
        {
            return false;
        }

        _wal.Append(new WalSnapshotMarker(meta.Index, meta.Term)
        {
            Voters = [.. meta.ConfState.Voters],
            Learners = [.. meta.ConfState.Learners],
            ReplacesLog = true,
        });
        return _memory.ApplySnapshot(new RaftSnapshot { Metadata = meta });
    }

    // Writes each entry to the WAL just before mirroring it, so the WAL and memory agree even if a gap stops the batch.
    private void AppendLocked(IReadOnlyList<Entry> entries)
    {
        foreach (var e in entries)
        {
            if (e.Index <= Offset)
            {
                continue;
            }

            if (e.Index > _memory.LastIndex() + 1)
            {
                throw new InvalidOperationException($"raft log: missing log entry [last: {_memory.LastIndex()}, append at: {e.Index}]");
            }

            var record = new WalEntry(e.Index, e.Term, (byte)e.Type, e.Data);
            _wal.Append(record);
            _memory.Append([Retained(record, _wal.Directory)]);
        }
    }

    // The entry as the log keeps it: its payload copied into the arena.
    private Entry Retained(WalEntry e, string directory) => e.Type switch
    {
        (byte)EntryType.Normal or (byte)EntryType.ConfChange =>
            new Entry { Index = e.Index, Term = e.Term, Type = (EntryType)e.Type, Data = _payloads.Retain(e.Data) },
        _ => throw new InvalidDataException($"WAL in '{directory}': entry {e.Index} has unknown type {e.Type}"),
    };
}
