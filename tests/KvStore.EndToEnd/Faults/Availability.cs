using System.Globalization;
using KvStore.EndToEnd.Linearizability;

namespace KvStore.EndToEnd.Faults;

/// <summary>How available writes stayed during a run, measured on the completion times of acknowledged writes.</summary>
/// <param name="WindowsWithWrite">One-second windows of the run in which at least one write was acknowledged.</param>
/// <param name="Windows">All one-second windows of the run.</param>
/// <param name="LongestOutageMs">The longest time without an acknowledged write, from the first one to the end of the run.</param>
/// <param name="ResumeAfterLeaderKillMs">Per leader kill: time from the SIGKILL to the first acknowledged write sent after it.</param>
/// <param name="ResumeAfterLeaderIsolationMs">The same per partition of the leader, from the cut.</param>
/// <param name="ResumeAfterLeaderPauseMs">The same per SIGSTOP of the leader, from the stop.</param>
public sealed record Availability(int WindowsWithWrite, int Windows, long LongestOutageMs, IReadOnlyList<long> ResumeAfterLeaderKillMs, IReadOnlyList<long> ResumeAfterLeaderIsolationMs, IReadOnlyList<long> ResumeAfterLeaderPauseMs)
{
    public static Availability Measure(IReadOnlyList<KvOperation> ops, IReadOnlyList<FaultEvent> faults, long runEndUs)
    {
        var writes = ops.Where(o => o.Kind != KvOpKind.Read && o.Outcome == KvOutcome.Ok).ToList();
        var done = writes.Select(o => o.Completed).Order().ToList();
        var windows = (int)Math.Max(1, runEndUs / 1_000_000);
        var withWrite = done.Select(t => t / 1_000_000).Where(w => w < windows).Distinct().Count();
        // Outages count from the first acknowledged write on: before it the clients were still connecting.
        long longest = 0, last = done.Count > 0 ? done[0] : 0;
        foreach (var t in done.Append(runEndUs))
        {
            longest = Math.Max(longest, t - last);
            last = Math.Max(last, t);
        }

        List<long> ResumeAfter(FaultKind kind) => faults.Where(f => f.Step.Kind == kind)
            .Select(f => writes.Where(o => o.Invoked >= f.StartedUs).Select(o => o.Completed).DefaultIfEmpty(runEndUs).Min() - f.StartedUs)
            .Select(us => us / 1000).ToList();
        return new Availability(withWrite, windows, longest / 1000, ResumeAfter(FaultKind.KillLeader), ResumeAfter(FaultKind.IsolateLeader), ResumeAfter(FaultKind.PauseLeader));
    }

    public override string ToString() =>
        $"writes acknowledged in {WindowsWithWrite}/{Windows} one-second windows ({100.0 * WindowsWithWrite / Windows:F0}%), " +
        $"longest write outage {LongestOutageMs} ms, writes resumed after leader kills in [{Ms(ResumeAfterLeaderKillMs)}], after leader partitions in [{Ms(ResumeAfterLeaderIsolationMs)}], after leader pauses in [{Ms(ResumeAfterLeaderPauseMs)}]";

    private static string Ms(IReadOnlyList<long> values) => string.Join(", ", values.Select(m => m.ToString(CultureInfo.InvariantCulture) + " ms"));
}
