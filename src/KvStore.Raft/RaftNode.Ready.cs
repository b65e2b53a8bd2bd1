namespace KvStore.Raft;

/// <summary>The Ready/Advance handshake with the caller.</summary>
public sealed partial class RaftNode
{
    /// <summary>True when <see cref="GetReady"/> would return work.</summary>
    public bool HasReady()
    {
        if (_readyOutstanding)
        {
            return false;
        }

        if (SoftState != _prevSoftState)
        {
            return true;
        }

        var hs = HardState;
        if (!hs.IsEmpty && hs != _prevHardState)
        {
            return true;
        }

        return _log.UnstableSnapshot is not null
            || _msgs.Count > 0
            || _log.HasUnstable()
            || _log.HasNextEntriesToApply()
            || _readStates.Count > 0;
    }

    /// <summary>
    /// Collects pending work. The caller must carry it out (persist, send, apply) and call <see cref="Advance"/>
    /// before the next GetReady; <see cref="Step"/>, <see cref="Tick"/> and proposals may be called in between.
    /// </summary>
    /// <exception cref="InvalidOperationException">The previous Ready was not advanced.</exception>
    public Ready GetReady()
    {
        if (_readyOutstanding)
        {
            throw new InvalidOperationException("raft: GetReady called again before Advance");
        }

        var soft = SoftState;
        var hard = HardState;
        var rd = new Ready
        {
            SoftState = soft != _prevSoftState ? soft : null,
            HardState = !hard.IsEmpty && hard != _prevHardState ? hard : null,
            Entries = _log.UnstableEntries(),
            Snapshot = _log.UnstableSnapshot,
            CommittedEntries = _log.NextEntriesToApply(),
            Messages = _msgs,
            ReadStates = _readStates,
        };
        _msgs = [];
        _readStates = [];
        _prevSoftState = soft;
        if (rd.HardState is not null)
        {
            _prevHardState = hard;
        }

        _readyOutstanding = true;
        return rd;
    }

    /// <summary>
    /// Acknowledges that <paramref name="ready"/> was persisted, sent and applied: the entries become stable, the
    /// snapshot and committed entries count as applied, and conf-change entries among them change the membership.
    /// </summary>
    public void Advance(Ready ready)
    {
        ArgumentNullException.ThrowIfNull(ready);
        if (!_readyOutstanding)
        {
            throw new InvalidOperationException("raft: Advance called without an outstanding Ready");
        }

        _readyOutstanding = false;
        if (ready.Snapshot is not null)
        {
            _log.StableSnapTo(ready.Snapshot.Metadata.Index);
            _log.AppliedSnapshot(ready.Snapshot.Metadata.Index);
        }

        if (ready.Entries.Count > 0)
        {
            var last = ready.Entries[^1];
            _log.StableTo(last.Index, last.Term);
        }

        AckOwnStableEntries();

        foreach (var e in ready.CommittedEntries)
        {
            if (e.Type == EntryType.ConfChange && e.Index > _log.Applied)
            {
                ApplyConfChange(ConfChange.Decode(e.Data.Span));
            }
        }

        if (ready.CommittedEntries.Count > 0)
        {
            var last = ready.CommittedEntries[^1].Index;
            if (last > _log.Applied)
            {
                _log.AppliedTo(last);
            }
        }
    }
}
