namespace KvStore.Raft.Tracker;

/// <summary>How the leader currently replicates to a follower.</summary>
internal enum ProgressState
{
    /// <summary>One append at a time until the follower's match is found.</summary>
    Probe = 0,

    /// <summary>Pipelined appends within the inflight window.</summary>
    Replicate = 1,

    /// <summary>A snapshot is on its way; appends wait.</summary>
    Snapshot = 2,
}

/// <summary>The leader's view of one follower: Match (known stored), Next (next to send).</summary>
internal sealed class Progress(ulong next, int maxInflight, bool isLearner)
{
    public ulong Match { get; set; }

    public ulong Next { get; set; } = next;

    public ProgressState State { get; private set; } = ProgressState.Probe;

    public ulong PendingSnapshot { get; set; }

    /// <summary>Heard from since the last quorum check.</summary>
    public bool RecentActive { get; set; }

    /// <summary>In probe state: an append is outstanding, wait for a reply or a heartbeat response.</summary>
    public bool ProbeSent { get; set; }

    public Inflights Inflights { get; } = new(maxInflight);

    public bool IsLearner { get; set; } = isLearner;

    public bool IsPaused => State switch
    {
        ProgressState.Probe => ProbeSent,
        ProgressState.Replicate => Inflights.Full,
        _ => true,
    };

    public void BecomeProbe()
    {
        if (State == ProgressState.Snapshot)
        {
            var pending = PendingSnapshot;
            Reset(ProgressState.Probe);
            Next = Math.Max(Match + 1, pending + 1);
        }
        else
        {
            Reset(ProgressState.Probe);
            Next = Match + 1;
        }
    }

    public void BecomeReplicate()
    {
        Reset(ProgressState.Replicate);
        Next = Match + 1;
    }

    public void BecomeSnapshot(ulong snapshotIndex)
    {
        Reset(ProgressState.Snapshot);
        PendingSnapshot = snapshotIndex;
    }

    /// <summary>An acknowledgement up to <paramref name="n"/>; returns true when Match moved.</summary>
    public bool MaybeUpdate(ulong n)
    {
        var updated = false;
        if (Match < n)
        {
            Match = n;
            updated = true;
            ProbeSent = false;
        }

        Next = Math.Max(Next, n + 1);
        return updated;
    }

    public void OptimisticUpdate(ulong n) => Next = n + 1;

    /// <summary>A rejection of the append at <paramref name="rejected"/>; returns false when it is stale.</summary>
    public bool MaybeDecrTo(ulong rejected, ulong matchHint)
    {
        if (State == ProgressState.Replicate)
        {
            if (rejected <= Match)
            {
                return false;
            }

            Next = Match + 1;
            return true;
        }

        if (Next - 1 != rejected)
        {
            return false;
        }

        Next = Math.Max(Math.Min(rejected, matchHint + 1), Match + 1);
        if (Next == 0)
        {
            Next = 1;
        }

        ProbeSent = false;
        return true;
    }

    private void Reset(ProgressState state)
    {
        ProbeSent = false;
        PendingSnapshot = 0;
        State = state;
        Inflights.Reset();
    }

    public override string ToString() => $"{State} match={Match} next={Next}{(IsLearner ? " learner" : string.Empty)}";
}
