using System.Diagnostics;
using KvStore.EndToEnd.Linearizability;

namespace KvStore.EndToEnd.Faults;

/// <summary>A write the server acknowledged: the key held <see cref="Value"/> (null: deleted) from revision <see cref="Revision"/> on.</summary>
public sealed record AckedWrite(string Key, string? Value, long Revision, int OperationId);

/// <summary>
/// The shared, thread-safe record of a run: every operation with its interval in microseconds since the run
/// started, and every acknowledged write with its revision.
/// </summary>
public sealed class HistoryRecorder
{
    private readonly object _lock = new();
    private readonly List<KvOperation> _ops = [];
    private readonly List<AckedWrite> _acked = [];
    private readonly long _origin = Stopwatch.GetTimestamp();
    private int _nextId;

    /// <summary>Microseconds since the run started (monotonic).</summary>
    public long Now => (long)Stopwatch.GetElapsedTime(_origin).TotalMicroseconds;

    public int NextId() => Interlocked.Increment(ref _nextId);

    public void Add(KvOperation op)
    {
        lock (_lock)
        {
            _ops.Add(op);
        }
    }

    public void Acknowledge(AckedWrite write)
    {
        lock (_lock)
        {
            _acked.Add(write);
        }
    }

    public IReadOnlyList<KvOperation> Operations()
    {
        lock (_lock)
        {
            return [.. _ops];
        }
    }

    public IReadOnlyList<AckedWrite> Acknowledged()
    {
        lock (_lock)
        {
            return [.. _acked];
        }
    }
}
