namespace KvStore.Server.Compaction;

/// <summary>
/// etcd's periodic compactor as a pure state machine, driven by <see cref="Tick"/> every <see cref="RetryInterval"/>
/// (the period / 10, at most 6 minutes). It keeps the revisions sampled over the last period (one per tick), so the
/// oldest sample is the revision of one period ago; once a period has passed since the start (later: since the last
/// success, and at most one hour) it asks to compact at that revision. Sampling goes on while the member is not the
/// leader, so a new leader can compact at once.
/// </summary>
public sealed class PeriodicCompactionSchedule
{
    private readonly Queue<long> _revisions = new();
    private readonly TimeSpan _period;
    private readonly TimeSpan _compactInterval;
    private readonly int _retentions;
    private DateTimeOffset _lastSuccess;
    private TimeSpan _baseInterval;

    /// <summary>Starts the schedule at <paramref name="now"/> with the store's revision then.</summary>
    public PeriodicCompactionSchedule(TimeSpan period, DateTimeOffset now, long revision)
    {
        _period = period;
        _compactInterval = period > TimeSpan.FromHours(1) ? TimeSpan.FromHours(1) : period;
        RetryInterval = _compactInterval / 10;
        _retentions = (int)(period / RetryInterval);
        _lastSuccess = now;
        _baseInterval = period;
        _revisions.Enqueue(revision);
    }

    /// <summary>How often <see cref="Tick"/> must be called.</summary>
    public TimeSpan RetryInterval { get; }

    /// <summary>
    /// One tick: returns the revision to compact at, or null. <paramref name="revision"/> is the store's revision now;
    /// <paramref name="isLeader"/> false only samples.
    /// </summary>
    public long? Tick(DateTimeOffset now, long revision, bool isLeader)
    {
        long? due = null;
        if (isLeader && now - _lastSuccess >= _baseInterval)
        {
            // After the first full period, compact every compact interval (at most hourly).
            _baseInterval = _compactInterval;
            due = _revisions.Peek();
        }

        _revisions.Enqueue(revision);
        while (_revisions.Count > _retentions)
        {
            _revisions.Dequeue();
        }

        return due;
    }

    /// <summary>The compaction asked for by the last tick succeeded (or was already done).</summary>
    public void Succeeded(DateTimeOffset now) => _lastSuccess = now;

    /// <summary>The period of history kept.</summary>
    public TimeSpan Period => _period;
}

/// <summary>
/// etcd's revision compactor: every 5 minutes, when leader, compact at (revision − retention) unless that is not
/// positive or is the revision compacted last time.
/// </summary>
public sealed class RevisionCompactionSchedule(long retention)
{
    /// <summary>etcd's check interval.</summary>
    public static readonly TimeSpan CheckInterval = TimeSpan.FromMinutes(5);

    private long _previous;

    /// <summary>The revision to compact at now, or null.</summary>
    public long? Tick(long revision, bool isLeader)
    {
        var target = revision - retention;
        return !isLeader || target <= 0 || target == _previous ? null : target;
    }

    /// <summary>The compaction at <paramref name="revision"/> succeeded (or was already done).</summary>
    public void Succeeded(long revision) => _previous = revision;
}
