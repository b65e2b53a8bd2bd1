using System.Globalization;
using System.Text;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.EndToEnd.Cluster;
using KvStore.EndToEnd.Linearizability;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Faults;

/// <summary>
/// A 3-member cluster of real processes under concurrent clients while a seeded nemesis kills members, kills the
/// leader, kills a majority, pauses members, moves leadership and partitions peer traffic (one member, the
/// leader, one direction). Afterwards: the history is linearizable, the members converge,
/// every acknowledged write is in the store's history at its revision, and every watch saw the history exactly.
/// </summary>
/// <remarks>
/// CI runs a few fixed seeds. KVSTORE_FAULT_SEED=n runs seed n only (a failure prints its seed);
/// KVSTORE_FAULT_SOAK=n runs seeds 1..n; KVSTORE_FAULT_STEPS sets the number of faults per seed (default 5).
/// See docs/testing.md.
/// </remarks>
[Collection(ClusterTestGroup.Name)]
public sealed class RandomizedFaultTests(ITestOutputHelper output)
{
    private const int Members = 3;
    private const int Clients = 4;
    private const int Keys = 5;
    private const int MaxOpsPerClient = 20_000;
    private const int LeaseClients = 2;
    private const int MaxLeasesPerClient = 300;
    private static readonly TimeSpan OpTimeout = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(60);

    public static TheoryData<int> Seeds()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable("KVSTORE_FAULT_SEED"), CultureInfo.InvariantCulture, out var one))
        {
            return [one];
        }

        if (int.TryParse(Environment.GetEnvironmentVariable("KVSTORE_FAULT_SOAK"), CultureInfo.InvariantCulture, out var many) && many > 0)
        {
            return [.. Enumerable.Range(1, many)];
        }

        return [1, 2];
    }

    private static int Steps => int.TryParse(Environment.GetEnvironmentVariable("KVSTORE_FAULT_STEPS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 5;

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Histories_under_crashes_pauses_and_leader_moves_are_linearizable_and_every_watch_sees_them(int seed)
    {
        var plan = Nemesis.Plan(seed, Steps, Members);
        output.WriteLine($"seed {seed} (KVSTORE_FAULT_SEED={seed} KVSTORE_FAULT_STEPS={plan.Count} reproduces this schedule): {string.Join("; ", plan)}");
        // Each member in a network namespace of its own, so the nemesis can partition real peer traffic (docs/testing.md).
        using var network = await PeerNetwork.CreateAsync(output, Members);
        await using var c = await TestCluster.StartAsync(output, Members, network: network);
        var history = new HistoryRecorder();
        var nemesis = new Nemesis(c, history, network);
        using var channels = new WorkloadChannels(c.Members);
        var watchers = c.Members.Select(m => new WatchRecorder(m, channels)).ToList();

        using var stopWatching = new CancellationTokenSource();
        using var stopClients = new CancellationTokenSource();
        var watching = Task.WhenAll(watchers.Select(w => w.RunAsync(stopWatching.Token)));
        var clients = new KvWorkload(c.Members, channels, history, seed, Clients, Keys, OpTimeout).RunAsync(MaxOpsPerClient, stopClients.Token);
        var leases = new LeaseWorkload(c.Members, channels, history, seed, LeaseClients, OpTimeout);
        var leaseClients = leases.RunAsync(MaxLeasesPerClient, stopClients.Token);

        Exception? nemesisFailure = null;
        long calmSince = 0;
        try
        {
            await nemesis.RunAsync(plan);
            await c.WaitLeaderAsync(c.Members, TimeSpan.FromSeconds(30));
            calmSince = history.Now; // no leader change (which extends every lease) after this
            await Task.Delay(1000); // a calm second of traffic after the last fault
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException or Grpc.Core.RpcException)
        {
            nemesisFailure = e;
        }

        await stopClients.CancelAsync();
        await clients.WaitAsync(OpTimeout + TimeSpan.FromSeconds(30));
        await leaseClients.WaitAsync((4 * OpTimeout) + TimeSpan.FromSeconds(30));
        var runEnd = history.Now;
        var ops = history.Operations();
        var acked = history.Acknowledged();
        var context = new FailureContext(seed, plan, nemesis.Events, ops);
        if (nemesisFailure is not null)
        {
            await stopWatching.CancelAsync();
            throw context.Fail("the nemesis could not bring the cluster back", nemesisFailure.ToString());
        }

        // Leases, before anything reads the final state: every lease key must go, and in time; nothing writes after that.
        var (leaseViolations, maxOverstayMs) = await leases.CheckExpiryAsync(calmSince, TestCluster.ElectionTimeout, CancellationToken.None);
        var leaseList = leases.Leases();
        output.WriteLine($"leases: {leaseList.Count} granted (or maybe), {leaseList.Count(l => l.RevokedAtUs is not null)} revoked with an answer, {leaseViolations.Count} keys late or never gone; a key was seen at most {maxOverstayMs} ms after its lease's end (allowed: TTL + {TestCluster.ElectionTimeout.TotalMilliseconds:F0} ms)");
        if (leaseViolations.Count > 0)
        {
            await stopWatching.CancelAsync();
            throw context.Fail("a key outlived its lease by more than the TTL plus an election timeout", string.Join('\n', leaseViolations.Take(20)));
        }

        var availability = Availability.Measure(ops, nemesis.Events, runEnd);
        output.WriteLine($"faults: {string.Join("; ", nemesis.Events)}");
        output.WriteLine($"faults per kind: {string.Join(", ", nemesis.Events.GroupBy(e => e.Step.Kind).Select(g => $"{g.Key} {g.Count()}"))}");
        output.WriteLine($"operations: {ops.Count} ({Summarize(ops)}); acknowledged writes {acked.Count}");
        output.WriteLine($"availability: {availability}");

        // All members converge: same applied index, revision and hash.
        var maxAcked = acked.Count > 0 ? acked.Max(a => a.Revision) : 1;
        var converged = await c.WaitConvergedAsync(c.Members, maxAcked, SettleTimeout);

        // The store's history: a watch from revision 1 through each member, read after convergence; all the same.
        var logs = new List<IReadOnlyList<WatchedEvent>>();
        foreach (var m in c.Members)
        {
            logs.Add(await ReadHistoryAsync(m, channels, converged.Revision, context));
        }

        var log = logs[0];
        for (var i = 1; i < logs.Count; i++)
        {
            if (!logs[i].SequenceEqual(log))
            {
                throw context.Fail($"the store's history through {c.Members[i].Name} differs from {c.Members[0].Name}'s", FirstDifference(log, logs[i]));
            }
        }

        // Every acknowledged write is in the history at its revision; the final value of each key is the last write's.
        var byRevision = log.ToLookup(e => (e.Revision, e.Key));
        foreach (var a in acked)
        {
            if (!byRevision[(a.Revision, a.Key)].Any(e => e.IsDelete == (a.Value is null) && e.Value == a.Value))
            {
                throw context.Fail($"acknowledged write #{a.OperationId} ({a.Key}={a.Value ?? "(deleted)"} at revision {a.Revision}) is not in the store's history", string.Join('\n', log.Where(e => e.Key == a.Key && Math.Abs(e.Revision - a.Revision) < 20)));
            }
        }

        foreach (var m in c.Members)
        {
            var r = await new KV.KVClient(channels.For(m)).RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8(KvWorkload.Prefix), RangeEnd = ByteString.CopyFromUtf8(TestCluster.PrefixEnd(KvWorkload.Prefix)) }, deadline: DateTime.UtcNow + TimeSpan.FromSeconds(10));
            var actual = r.Kvs.ToDictionary(kv => kv.Key.ToStringUtf8(), kv => kv.Value.ToStringUtf8());
            var expected = log.GroupBy(e => e.Key).Select(g => g.Last()).Where(e => !e.IsDelete).ToDictionary(e => e.Key, e => e.Value!);
            actual.Should().BeEquivalentTo(expected, "the keys through {0} hold the last write of the history (seed {1})", m.Name, seed);
        }

        // The watches kept open through the faults saw exactly that history: in order, each revision once, no gaps.
        foreach (var w in watchers)
        {
            if (!await w.WaitForRevisionAsync(converged.Revision, SettleTimeout))
            {
                throw context.Fail($"the watch via {w.MemberName} stopped at revision {w.LastRevision} of {converged.Revision}", string.Join('\n', w.Violations()));
            }
        }

        await stopWatching.CancelAsync();
        await watching.WaitAsync(TimeSpan.FromSeconds(30));
        foreach (var w in watchers)
        {
            if (w.Violations().Count > 0)
            {
                throw context.Fail($"the watch via {w.MemberName} broke its guarantees", string.Join('\n', w.Violations().Take(20)));
            }

            var seen = w.Events().TakeWhile(e => e.Revision <= converged.Revision).ToList();
            if (!seen.SequenceEqual(log))
            {
                throw context.Fail($"the watch via {w.MemberName} (reconnected {w.Reconnects} times) does not match the store's history", FirstDifference(log, seen));
            }
        }

        // Finally, linearizability of everything the clients saw.
        var verdict = LinearizabilityChecker.Check(ops);
        output.WriteLine($"linearizability: {verdict.Report()}");
        output.WriteLine($"watch: {log.Count} events up to revision {converged.Revision} seen by {watchers.Count} watches ({string.Join(", ", watchers.Select(w => $"{w.MemberName} reconnected {w.Reconnects}x"))})");
        if (!verdict.Passed)
        {
            throw context.Fail("the history is not linearizable", verdict.Report());
        }
    }

    private static async Task<IReadOnlyList<WatchedEvent>> ReadHistoryAsync(ClusterMember m, WorkloadChannels channels, long revision, FailureContext context)
    {
        var w = new WatchRecorder(m, channels);
        using var stop = new CancellationTokenSource();
        var run = w.RunAsync(stop.Token);
        var complete = await w.WaitForRevisionAsync(revision, TimeSpan.FromSeconds(30));
        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(30));
        if (!complete || w.Violations().Count > 0)
        {
            throw context.Fail($"a watch from revision 1 via {m.Name} did not deliver revisions 2..{revision} in order", string.Join('\n', w.Violations()));
        }

        return [.. w.Events().TakeWhile(e => e.Revision <= revision)];
    }

    private static string FirstDifference(IReadOnlyList<WatchedEvent> expected, IReadOnlyList<WatchedEvent> actual)
    {
        var i = 0;
        while (i < expected.Count && i < actual.Count && expected[i] == actual[i])
        {
            i++;
        }

        var from = Math.Max(0, i - 3);
        return $"first difference at event {i} (expected {expected.Count} events, got {actual.Count}):\n  expected: {string.Join("; ", expected.Skip(from).Take(8))}\n  actual:   {string.Join("; ", actual.Skip(from).Take(8))}";
    }

    private static string Summarize(IReadOnlyList<KvOperation> ops) =>
        string.Join(", ", ops.GroupBy(o => (o.Kind, o.Outcome)).OrderBy(g => g.Key).Select(g => $"{g.Key.Kind} {g.Key.Outcome.ToString().ToLowerInvariant()} {g.Count()}"));

    /// <summary>What every failure message carries: the seed, the plan, the faults as they happened, and a slice of the history.</summary>
    private sealed record FailureContext(int Seed, IReadOnlyList<FaultStep> Plan, IReadOnlyList<FaultEvent> Faults, IReadOnlyList<KvOperation> Ops)
    {
        public Xunit.Sdk.XunitException Fail(string what, string details)
        {
            var sb = new StringBuilder();
            sb.Append(CultureInfo.InvariantCulture, $"seed {Seed}: {what} (reproduce: KVSTORE_FAULT_SEED={Seed} KVSTORE_FAULT_STEPS={Plan.Count})\n");
            sb.Append("planned faults: ").Append(string.Join("; ", Plan)).Append('\n');
            sb.Append("faults injected:\n");
            foreach (var f in Faults)
            {
                sb.Append("  ").Append(f).Append('\n');
            }

            sb.Append(details).Append('\n');
            sb.Append(CultureInfo.InvariantCulture, $"last operations of {Ops.Count} (times in µs since the run started):\n");
            foreach (var op in Ops.OrderBy(o => o.Invoked).TakeLast(15))
            {
                sb.Append("  ").Append(op).Append('\n');
            }

            return new Xunit.Sdk.XunitException(sb.ToString());
        }
    }
}
