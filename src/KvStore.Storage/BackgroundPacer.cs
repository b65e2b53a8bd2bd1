using System.Diagnostics;

namespace KvStore.Storage;

/// <summary>
/// Keeps a CPU-bound background loop (a defragment's copy, the listing of live revisions a defragment or a snapshot
/// makes while writes go on) in short bursts: after each <see cref="Burst"/> of work, <see cref="Step"/> sleeps for
/// <see cref="Rest"/>.
/// Why: the runtime stops every thread for a garbage collection, and it can only stop a thread that runs managed code
/// when that thread is on a CPU. A loop that runs for long stretches is preempted by the kernel mid-stretch, and on a
/// saturated machine the kernel makes such a CPU-hungry thread wait tens of milliseconds for its next turn, so the
/// collection, and every client request with it, waits too (measured: ~100 ms stalls of all 16 putters during a
/// defragment on 2 cores). A thread that sleeps after each millisecond of work is rarely preempted mid-burst and is
/// scheduled again promptly when it is.
/// </summary>
internal sealed class BackgroundPacer
{
    /// <summary>Work between two rests.</summary>
    public static readonly TimeSpan Burst = TimeSpan.FromMilliseconds(1);

    /// <summary>Sleep after each burst.</summary>
    public static readonly TimeSpan Rest = TimeSpan.FromMilliseconds(2);

    private long _burstStarted = Stopwatch.GetTimestamp();

    /// <summary>Call between two units of work: sleeps when the current burst has run for <see cref="Burst"/>.</summary>
    public void Step()
    {
        if (Stopwatch.GetElapsedTime(_burstStarted) < Burst)
        {
            return;
        }

        Thread.Sleep(Rest);
        _burstStarted = Stopwatch.GetTimestamp();
    }

    /// <summary>Starts a new burst (after the loop slept or waited for some other reason).</summary>
    public void Restart() => _burstStarted = Stopwatch.GetTimestamp();
}
