using System.Globalization;
using Etcdserverpb;
using KvStore.EndToEnd.Cluster;
using KvStore.EndToEnd.Linearizability;

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

    /// <summary>A storm of Maintenance.MoveLeader calls, each from the current leader to another member.</summary>
    MoveLeader,

    /// <summary>Cut one member's peer traffic both ways (a minority partition) for a while, then heal.</summary>
    IsolateMember,

    /// <summary>Cut the current leader's peer traffic both ways for a while, then heal.</summary>
    IsolateLeader,

    /// <summary>One direction only: one follower stops receiving the leader's messages (it still reaches the leader).</summary>
    LeaderOneWay,

    /// <summary>SIGKILL a majority (two members of three) at once, restart both after a pause: no quorum meanwhile.</summary>
    KillMajority,

    /// <summary>
    /// SIGSTOP the current leader for 5-6.5 s, then SIGCONT: it wakes up believing it still leads, as after a clock
    /// jump (the server's timers are monotonic, so a wall-clock jump changes nothing; see docs/testing.md).
    /// </summary>
    PauseLeader,

    /// <summary>SIGKILL one follower, delete its data dir, member remove, member add (same name and URLs), restart it with state existing.</summary>
    RemoveAddMember,
}

/// <summary>One planned fault: what, on which member (an index; the leader is resolved when it runs), for how long, after how long a calm.</summary>
public sealed record FaultStep(FaultKind Kind, int Target, TimeSpan CalmBefore, TimeSpan Duration)
{
    public override string ToString() =>
        $"{Kind}{(Kind is FaultKind.KillMember or FaultKind.PauseMember or FaultKind.MoveLeader or FaultKind.IsolateMember or FaultKind.KillMajority or FaultKind.LeaderOneWay or FaultKind.RemoveAddMember ? $"(m{Target})" : string.Empty)} after {CalmBefore.TotalMilliseconds:F0} ms calm, for {Duration.TotalMilliseconds:F0} ms";
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
/// the run. Each fault ends with every member running and the network healed. Partitions are iptables rules in the
/// members' network namespaces (<see cref="PeerNetwork"/>): they cut peer traffic only, the test's clients still
/// reach every member, and each partition lasts until its effect has been seen (a member lost its leader, the
/// others elected one), so a rule that cut nothing would fail the run.
/// </summary>
public sealed class Nemesis
{
    private const int LeaderMovesPerStorm = 4;

    private readonly TestCluster _cluster;
    private readonly HistoryRecorder _clock;
    private readonly PeerNetwork _network;
    private readonly List<FaultEvent> _events = [];

    // How long a partition may take to show its effect (an election, a lost leader) before the run fails.
    private static readonly TimeSpan EffectTimeout = TimeSpan.FromSeconds(30);

    /// <param name="network">The namespaces the cluster's members run in (same order as the cluster's members).</param>
    public Nemesis(TestCluster cluster, HistoryRecorder clock, PeerNetwork network)
    {
        _cluster = cluster;
        _clock = clock;
        _network = network;
    }

    public IReadOnlyList<FaultEvent> Events => _events;

    /// <summary>
    /// The schedule for a seed: <paramref name="count"/> faults over <paramref name="members"/> members. The kinds
    /// cycle so that every run of as many consecutive faults as there are kinds holds each kind once: the first
    /// cycle in declaration order, starting <paramref name="count"/> kinds further for each seed (seeds 1 and 2 with
    /// five faults each try every kind), later cycles in a seeded order. A leader pause lasts 5-6.5 s.
    /// </summary>
    public static IReadOnlyList<FaultStep> Plan(int seed, int count, int members)
    {
        var rng = new Random(seed);
        var all = Enum.GetValues<FaultKind>();
        var start = (int)(((long)count * (seed - 1)) % all.Length + all.Length) % all.Length;
        var kinds = all.Skip(start).Concat(all.Take(start)).ToList();
        while (kinds.Count < count)
        {
            kinds.AddRange([.. all.OrderBy(_ => rng.Next())]);
        }

        return [.. kinds.Take(count).Select(kind => new FaultStep(
            kind,
            rng.Next(members),
            TimeSpan.FromMilliseconds(rng.Next(800, 2500)),
            TimeSpan.FromMilliseconds(kind == FaultKind.PauseLeader ? rng.Next(5000, 6501) : rng.Next(500, 3000))))];
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
                FaultKind.MoveLeader => await MoveLeaderAsync(step.Target),
                FaultKind.IsolateMember => await IsolateAsync(_cluster.Members[step.Target], step.Duration),
                FaultKind.IsolateLeader => await IsolateAsync(await LeaderAsync(), step.Duration),
                FaultKind.LeaderOneWay => await LeaderOneWayAsync(step.Target, step.Duration),
                FaultKind.PauseLeader => await PauseAsync(await LeaderAsync(), step.Duration),
                FaultKind.RemoveAddMember => await RemoveAndAddWipedAsync(step.Target),
                _ => await KillMajorityAsync(step.Target, step.Duration),
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
        await m.SignalAsync("STOP");
        var started = _clock.Now; // once stopped: sending the signal takes a moment in which writes still commit
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

    /// <summary>
    /// Cuts <paramref name="m"/> off from every other member both ways, then heals after <paramref name="cut"/>. The
    /// cut lasts at least until its effect is seen: the others agree on a leader among themselves (a new one when
    /// <paramref name="m"/> led) and acknowledge a workload write sent after the cut, and <paramref name="m"/> no
    /// longer follows or claims that leadership (it lost its leader, or its term rose).
    /// </summary>
    private async Task<(long, string, string)> IsolateAsync(ClusterMember m, TimeSpan cut)
    {
        var others = _cluster.Members.Where(o => o != m).ToList();
        await LeaderAsync(); // so that "m lost its leader" below means something
        var before = await _cluster.StatusAsync(m, TimeSpan.FromSeconds(10));
        long started;
        string note;
        try
        {
            await _network.IsolateAsync(IndexOf(m));
            started = _clock.Now;
            var until = Task.Delay(cut);
            var majority = _cluster.WaitLeaderAsync(others, EffectTimeout);
            var lost = WaitLeaderLostAsync(m, before, EffectTimeout);
            var write = WaitWriteAsync(others, started, EffectTimeout);
            await Task.WhenAll(majority, lost, write);
            note = $"{(before.IsLeader ? "the others elected " : "the others' leader ")}{(await majority).Name} and acknowledged a write {await write} ms after the cut; {m.Name} {await lost} after the cut";
            await until;
        }
        finally
        {
            await _network.HealAsync();
        }

        return (started, m.Name, note);
    }

    /// <summary>Waits until a workload write sent after <paramref name="since"/> through one of <paramref name="members"/> is acknowledged; returns when (ms after <paramref name="since"/>).</summary>
    private async Task<long> WaitWriteAsync(IReadOnlyList<ClusterMember> members, long since, TimeSpan timeout)
    {
        var names = members.Select(o => o.Name).ToHashSet();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            var acked = _clock.Operations().Where(o => o.Invoked >= since && o.Kind != KvOpKind.Read && o.Outcome == KvOutcome.Ok && names.Contains(o.Member)).ToList();
            if (acked.Count > 0)
            {
                return (acked.Min(o => o.Completed) - since) / 1000;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"no write through {string.Join(",", names)} was acknowledged {timeout.TotalSeconds} s after the cut: the majority side does not serve writes");
    }

    /// <summary>
    /// Waits until <paramref name="m"/> no longer follows (or is) the leader it knew in <paramref name="before"/>:
    /// it reports no leader, or a raft term above the one it had. Returns how long that took since the call.
    /// </summary>
    private async Task<string> WaitLeaderLostAsync(ClusterMember m, MemberStatus before, TimeSpan timeout)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var last = "no status yet";
        while (sw.Elapsed < timeout)
        {
            var now = await _cluster.TryStatusAsync(m, TimeSpan.FromSeconds(2));
            last = now?.ToString() ?? "no answer";
            if (now is not null && (now.Leader == 0 || now.RaftTerm > before.RaftTerm))
            {
                return $"lost leader {before.Leader:x} ({now.ToString()}) {sw.ElapsedMilliseconds} ms";
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"{m.Name} still followed leader {before.Leader:x} in term {before.RaftTerm} {timeout.TotalSeconds} s after its peer traffic was cut: the partition did not cut it off (last: {last})");
    }

    /// <summary>
    /// Member <paramref name="target"/> (or the next one when it leads) is killed, loses its data dir, is removed from
    /// the cluster and added again under the same name and URLs (a new ID), and restarts with state existing; it must
    /// catch up from the others. etcd refuses a reconfiguration while a member has been connected for less than 5 s,
    /// so both calls are retried, bounded.
    /// </summary>
    private async Task<(long, string, string)> RemoveAndAddWipedAsync(int target)
    {
        var leader = await LeaderAsync();
        var m = _cluster.Members[target] == leader ? _cluster.Members[(target + 1) % _cluster.Members.Count] : _cluster.Members[target];
        var oldId = m.HexId;
        var started = _clock.Now;
        m.Kill();
        Directory.Delete(m.DataDir, recursive: true);
        await CtlRetriedAsync(leader, ["member", "remove", oldId]);
        await CtlRetriedAsync(leader, ["member", "add", m.Name, "--peer-urls=" + m.PeerUrl]);
        await _cluster.RestartAsync(m);
        return (started, m.Name, $"{oldId} removed, rejoined as {m.HexId}");
    }

    private async Task CtlRetriedAsync(ClusterMember via, IReadOnlyList<string> args)
    {
        var last = "not tried";
        for (var attempt = 0; attempt < 40; attempt++)
        {
            var r = await _cluster.CtlAsync(via, args, TimeSpan.FromSeconds(10));
            if (r.ExitCode == 0)
            {
                return;
            }

            last = TestCluster.ErrorLine(r);
            await Task.Delay(500);
        }

        throw new InvalidOperationException($"etcdctl {string.Join(' ', args)} via {via.Name} kept failing: {last}");
    }

    /// <summary>
    /// Member <paramref name="target"/> (or the next one when it leads) stops receiving the leader's messages for a
    /// while, and at least until it has lost that leader; its own messages still reach the leader.
    /// </summary>
    private async Task<(long, string, string)> LeaderOneWayAsync(int target, TimeSpan cut)
    {
        var leader = await LeaderAsync();
        var deaf = _cluster.Members[target] == leader ? _cluster.Members[(target + 1) % _cluster.Members.Count] : _cluster.Members[target];
        var before = await _cluster.StatusAsync(deaf, TimeSpan.FromSeconds(10));
        long started;
        string note;
        try
        {
            await _network.DropRaftMessagesAsync(IndexOf(leader), IndexOf(deaf));
            started = _clock.Now;
            var until = Task.Delay(cut);
            note = $"{deaf.Name} {await WaitLeaderLostAsync(deaf, before, EffectTimeout)} after the cut";
            await until;
        }
        finally
        {
            await _network.HealAsync();
        }

        return (started, $"{leader.Name}-x->{deaf.Name}", note);
    }

    /// <summary>SIGKILLs member <paramref name="target"/> and the next one together, restarts both after <paramref name="down"/>.</summary>
    private async Task<(long, string, string)> KillMajorityAsync(int target, TimeSpan down)
    {
        var victims = Enumerable.Range(0, (_cluster.Members.Count / 2) + 1).Select(k => _cluster.Members[(target + k) % _cluster.Members.Count]).ToList();
        var started = _clock.Now;
        foreach (var v in victims)
        {
            v.Kill();
        }

        await Task.Delay(down);
        await Task.WhenAll(victims.Select(v => _cluster.RestartAsync(v)));
        return (started, string.Join("+", victims.Select(v => v.Name)), string.Empty);
    }

    private int IndexOf(ClusterMember m) => _cluster.Members.ToList().IndexOf(m);

    /// <summary>
    /// A MoveLeader storm: leadership moved <see cref="LeaderMovesPerStorm"/> times in a row, first to member
    /// <paramref name="target"/> (or the next one when it already leads), then on around the members; each move waits
    /// for the previous one's leader. A refusal is noted, not fatal.
    /// </summary>
    private async Task<(long, string, string)> MoveLeaderAsync(int target)
    {
        var started = _clock.Now;
        var moves = new List<string>();
        var outcomes = new List<string>();
        var count = _cluster.Members.Count;
        for (var i = 0; i < LeaderMovesPerStorm; i++)
        {
            var leader = await LeaderAsync();
            var next = (target + i) % count;
            var to = _cluster.Members[next] == leader ? _cluster.Members[(next + 1) % count] : _cluster.Members[next];
            moves.Add($"{leader.Name}->{to.Name}");
            try
            {
                await new Maintenance.MaintenanceClient(leader.Channel).MoveLeaderAsync(new MoveLeaderRequest { TargetID = to.Id }, deadline: DateTime.UtcNow + TimeSpan.FromSeconds(10));
                outcomes.Add("moved");
            }
            catch (Grpc.Core.RpcException e)
            {
                outcomes.Add($"refused: {e.Status.StatusCode} {e.Status.Detail}");
            }
        }

        return (started, string.Join(", ", moves), string.Join("; ", outcomes));
    }
}
