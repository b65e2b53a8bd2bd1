namespace KvStore.Raft.Storage;

/// <summary>
/// Reference implementation of <see cref="IRaftStorage"/> held in memory: the "durable" state of tests and the model
/// for the FasterLog-backed one. Not thread-safe. Layout: <c>_entries[0]</c> stands for the snapshot position (index
/// <c>_snapshot.Metadata.Index</c>, its term) and carries no data; <c>_entries[k]</c> holds index <c>offset + k</c>.
/// </summary>
public sealed class InMemoryRaftStorage : IRaftStorage
{
    private readonly List<Entry> _entries = [new Entry()];
    private HardState _hardState;
    private Snapshot _snapshot = KvStore.Raft.Snapshot.Empty;

    private ulong Offset => _entries[0].Index;

    /// <summary>The persisted hard state.</summary>
    public HardState HardState => _hardState;

    /// <inheritdoc/>
    public RaftInitialState InitialState() => new(_hardState, _snapshot.Metadata.ConfState);

    /// <summary>Persists the hard state.</summary>
    public void SetHardState(HardState hardState) => _hardState = hardState;

    /// <inheritdoc/>
    public StorageStatus Entries(ulong lo, ulong hi, ulong maxSize, out IReadOnlyList<Entry> entries)
    {
        entries = [];
        if (lo <= Offset)
        {
            return StorageStatus.Compacted;
        }

        if (hi > LastIndex() + 1)
        {
            return StorageStatus.Unavailable;
        }

        var result = new List<Entry>();
        ulong size = 0;
        for (var i = lo; i < hi; i++)
        {
            var e = _entries[(int)(i - Offset)];
            size += e.Size;
            if (result.Count > 0 && size > maxSize)
            {
                break;
            }

            result.Add(e);
        }

        entries = result;
        return StorageStatus.Ok;
    }

    /// <inheritdoc/>
    public StorageStatus Term(ulong index, out ulong term)
    {
        term = 0;
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

    /// <inheritdoc/>
    public ulong FirstIndex() => Offset + 1;

    /// <inheritdoc/>
    public ulong LastIndex() => Offset + (ulong)_entries.Count - 1;

    /// <inheritdoc/>
    public StorageStatus Snapshot(out Snapshot snapshot)
    {
        snapshot = _snapshot;
        return StorageStatus.Ok;
    }

    /// <summary>
    /// Appends entries; an entry at index i first discards every stored entry at index ≥ i. Entries at or below the
    /// snapshot index are skipped. A gap after the last index is an error.
    /// </summary>
    public void Append(IReadOnlyList<Entry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        foreach (var e in entries)
        {
            if (e.Index <= Offset)
            {
                continue;
            }

            if (e.Index > LastIndex() + 1)
            {
                throw new RaftInvariantException($"raft storage: missing log entry [last: {LastIndex()}, append at: {e.Index}]");
            }

            var k = (int)(e.Index - Offset);
            if (k < _entries.Count)
            {
                _entries.RemoveRange(k, _entries.Count - k);
            }

            _entries.Add(e);
        }
    }

    /// <summary>Replaces everything with the snapshot (ignored when older than the current one).</summary>
    /// <returns>False when the snapshot is out of date.</returns>
    public bool ApplySnapshot(Snapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        if (snapshot.Metadata.Index <= _snapshot.Metadata.Index)
        {
            return false;
        }

        _snapshot = snapshot;
        _entries.Clear();
        _entries.Add(new Entry { Index = snapshot.Metadata.Index, Term = snapshot.Metadata.Term });
        return true;
    }

    /// <summary>Records a snapshot of the applied state at <paramref name="index"/> (which must be retained in the log).</summary>
    public Snapshot CreateSnapshot(ulong index, ConfState confState, ReadOnlyMemory<byte> data)
    {
        if (index <= _snapshot.Metadata.Index)
        {
            return _snapshot;
        }

        if (index > LastIndex())
        {
            throw new RaftInvariantException($"raft storage: snapshot {index} is out of bound lastindex({LastIndex()})");
        }

        _snapshot = new Snapshot
        {
            Metadata = new SnapshotMetadata { Index = index, Term = _entries[(int)(index - Offset)].Term, ConfState = confState },
            Data = data,
        };
        return _snapshot;
    }

    /// <summary>Discards entries before <paramref name="compactIndex"/>, keeping its term; the caller must have a snapshot covering it.</summary>
    public void Compact(ulong compactIndex)
    {
        if (compactIndex <= Offset)
        {
            return;
        }

        if (compactIndex > LastIndex())
        {
            throw new RaftInvariantException($"raft storage: compact {compactIndex} is out of bound lastindex({LastIndex()})");
        }

        var k = (int)(compactIndex - Offset);
        var term = _entries[k].Term;
        _entries.RemoveRange(0, k);
        _entries[0] = new Entry { Index = compactIndex, Term = term };
    }
}
