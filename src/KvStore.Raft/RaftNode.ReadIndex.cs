namespace KvStore.Raft;

/// <summary>
/// Linearizable reads (Raft thesis §6.4, "ReadOnlySafe"): the leader records its commit index, confirms it is still
/// leader with a heartbeat round acknowledged by a majority, then releases the read at that index.
/// </summary>
public sealed partial class RaftNode
{
    private void LeaderReadIndex(Message m)
    {
        if (!CommittedInCurrentTerm())
        {
            // Until an entry of our term is committed, our commit index may lag the true one (§6.4 step 1),
            // even as a single voter: a previous incarnation may have committed more than it persisted as commit.
            _pendingReadIndex.Add(m);
            return;
        }

        if (_tracker.Voters.Count == 1 && _tracker.IsVoter(Id))
        {
            ReleaseRead(_log.Committed, m);
            return;
        }

        _readOnly.Add(_log.Committed, m);
        if (_readOnly.Ack(Id, m.Context, _tracker.Voters))
        {
            foreach (var (index, request) in _readOnly.Advance(m.Context))
            {
                ReleaseRead(index, request);
            }

            return;
        }

        BcastHeartbeat();
    }

    private bool CommittedInCurrentTerm() => _log.TermOrZero(_log.Committed) == _term;

    private void ReleasePendingReadIndex()
    {
        if (_pendingReadIndex.Count == 0 || !CommittedInCurrentTerm())
        {
            return;
        }

        var pending = _pendingReadIndex.ToList();
        _pendingReadIndex.Clear();
        foreach (var m in pending)
        {
            LeaderReadIndex(m);
        }
    }

    private void ReleaseRead(ulong index, Message request)
    {
        if (request.From == 0 || request.From == Id)
        {
            _readStates.Add(new ReadState(index, request.Context));
        }
        else
        {
            Send(new Message { Type = MessageType.ReadIndexResp, To = request.From, Index = index, Context = request.Context });
        }
    }
}
