using System.Globalization;
using Etcdserverpb;
using KvStore.EndToEnd.Cluster;

namespace KvStore.EndToEnd.Faults;

/// <summary>The kinds of fault the nemesis injects.</summary>
public enum FaultKind
{
    /// <summary>SIGKILL one member (chosen by index), restart it after a pause.</summary>
    KillMember,

    /// <summary>SIGKILL whichever member leads at that moment, restart it after a pause.</summary>
    KillLeader,

    /// <summary>SIGSTOP one member for a while, then SIGCONT.</summary>
    PauseMember,

    /// <summary>Maintenance.MoveLeader from the current leader to another member.</summary>
    MoveLeader,
}

/// <summary>One planned fault: what, on which member (an index; the leader is resolved when it runs), for how long, after how long a calm.</summary>
public sealed record FaultStep(FaultKind Kind, int Target, TimeSpan CalmBefore, TimeSpan Duration)
{
    public override string ToString() =>
        $"{Kind}{(Kind is FaultKind.KillMember or FaultKind.PauseMember or FaultKind.MoveLeader ? $"(m{Target})" : string.Empty)} after {CalmBefore.TotalMilliseconds:F0} ms calm, for {Duration.TotalMilliseconds:F0} ms";
}

/// <summary>A fault as it happened: when (µs since the run started), on whom, and how it went.</summary>
public sealed record FaultEvent(FaultStep Step, long StartedUs, long EndedUs, string Member, string Note)
{
    public override string ToString() =>
        $"[{(StartedUs / 1000).ToString(CultureInfo.InvariantCulture)} ms .. {(EndedUs / 1000).ToString(CultureInfo.InvariantCulture)} ms] {Step.Kind} {Member}{(Note.Length > 0 ? ": " + Note : string.Empty)}";
}

/// <summary>
/// Injects a seeded schedule of faults into a running cluster: the schedule (kinds, targets, pauses) is a function of
/// the seed alone, so KVSTORE_FAULT_SEED reproduces it; which member leads when a leader fault fires depends on
/// the run. Each fault ends with every member running again, so at most one member is down at any time and the
/// cluster keeps its quorum.
/// </summary>
public sealed class Nemesis
{
    private readonly TestCluster _cluster;
    private readonly HistoryRecorder _clock;
    private readonly List<FaultEvent> _events = [];

    public Nemesis(TestCluster cluster, HistoryRecorder clock)
    {
        _cluster = cluster;
        _clock = clock;
    }

    public IReadOnlyList<FaultEvent> Events => _events;

    /// <summary>
    /// The schedule for a seed: <paramref name="count"/> faults over <paramref name="members"/> members. Every run of
    /// four consecutive faults holds each kind once (in a seeded order), so even a short run tries them all.
    /// </summary>
    public static IReadOnlyList<FaultStep> Plan(int seed, int count, int members)
    {
        var rng = new Random(seed);
        var kinds = new List<FaultKind>();
        while (kinds.Count < count)
        {
            kinds.AddRange(Enum.GetValues<FaultKind>().OrderBy(_ => rng.Next()).ToList());
        }

        return [.. kinds.Take(count).Select(kind => new FaultStep(
            kind,
            rng.Next(members),
            TimeSpan.FromMilliseconds(rng.Next(800, 2500)),
            TimeSpan.FromMilliseconds(rng.Next(500, 3000))))];
    }

    public async Task RunAsync(IReadOnlyList<FaultStep> plan)
    {
        foreach (var step in plan)
        {
            await Task.Delay(step.CalmBefore);
            var (started, member, note) = step.Kind switch
            {
                FaultKind.KillMember => await KillAndRestartAsync(_cluster.Members[step.Target], step.Duration),
                FaultKind.KillLeader => await KillAndRestartAsync(await LeaderAsync(), step.Duration),
                FaultKind.PauseMember => await PauseAsync(_cluster.Members[step.Target], step.Duration),
                _ => await MoveLeaderAsync(step.Target),
            };
            _events.Add(new FaultEvent(step, started, _clock.Now, member, note));
        }
    }

    private async Task<ClusterMember> LeaderAsync() => await _cluster.WaitLeaderAsync(_cluster.Members, TimeSpan.FromSeconds(30));

    // Each fault returns when it struck (µs since the run started; after the leader was looked up), on whom, and a note.
    private async Task<(long, string, string)> KillAndRestartAsync(ClusterMember m, TimeSpan down)
    {
        var started = _clock.Now;
        m.Kill();
        await Task.Delay(down);
        await _cluster.RestartAsync(m);
        return (started, m.Name, string.Empty);
    }

    private async Task<(long, string, string)> PauseAsync(ClusterMember m, TimeSpan paused)
    {
        var started = _clock.Now;
        await m.SignalAsync("STOP");
        try
        {
            await Task.Delay(paused);
        }
        finally
        {
            await m.SignalAsync("CONT");
        }

        return (started, m.Name, string.Empty);
    }

    /// <summary>Moves leadership to member <paramref name="target"/>, or to the next one when it already leads; a refusal is noted, not fatal.</summary>
    private async Task<(long, string, string)> MoveLeaderAsync(int target)
    {
        var leader = await LeaderAsync();
        var to = _cluster.Members[target] == leader ? _cluster.Members[(target + 1) % _cluster.Members.Count] : _cluster.Members[target];
        var started = _clock.Now;
        try
        {
            await new Maintenance.MaintenanceClient(leader.Channel).MoveLeaderAsync(new MoveLeaderRequest { TargetID = to.Id }, deadline: DateTime.UtcNow + TimeSpan.FromSeconds(10));
            return (started, $"{leader.Name}->{to.Name}", "moved");
        }
        catch (Grpc.Core.RpcException e)
        {
            return (started, $"{leader.Name}->{to.Name}", $"refused: {e.Status.StatusCode} {e.Status.Detail}");
        }
    }
}
