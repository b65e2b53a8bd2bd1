using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Replication;
using KvStore.Testing;
using Xunit.Abstractions;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// Power cuts of members of a running 3-member cluster (one follower, the leader, all three at once) while clients
/// write through every member. Each member's WAL and MVCC store (its log and checkpoint files) run over
/// <see cref="PowerLossDevice"/>s on one <see cref="PowerDomain"/>: at the cut, writes the disk had not confirmed are
/// dropped or torn at sector granularity, the member is cut off from its peers and abandoned as a dead machine leaves
/// it (no shutdown, no checkpoint), and it restarts from what reached the disk. Every acknowledged write must then be
/// on every member, and all members must hold the same revision records and HashKV at one revision all have applied.
/// </summary>
public sealed class ClusterPowerLossTests(ITestOutputHelper output)
{
    private const int Members = 3;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    public enum Victims
    {
        OneFollower,
        Leader,
        AllAtOnce,
    }

    [Theory]
    [InlineData(Victims.OneFollower, 1)]
    [InlineData(Victims.Leader, 2)]
    [InlineData(Victims.AllAtOnce, 3)]
    public async Task Every_acknowledged_write_survives_a_power_cut(Victims victims, int seed)
    {
        var rng = new Random(seed);
        var root = Path.Combine(Path.GetTempPath(), "kvstore-powercut-" + Guid.NewGuid().ToString("N")[..8]);
        var peerPorts = LoopbackPorts.Take(Members);
        var clientPorts = LoopbackPorts.Take(Members);
        var initial = string.Join(',', peerPorts.Select((p, i) => $"s{i}=http://127.0.0.1:{p}"));
        var members = new PoweredMember?[Members];
        var abandoned = new List<PoweredMember>();
        try
        {
            for (var i = 0; i < Members; i++)
            {
                members[i] = await PoweredMember.StartAsync(Path.Combine(root, $"s{i}"), i, peerPorts[i], clientPorts[i], initial);
            }

            var leader = await WaitLeaderAsync(members);
            var cut = victims switch
            {
                Victims.OneFollower => [Array.FindIndex(members, m => m!.Server != leader)],
                Victims.Leader => [Array.FindIndex(members, m => m!.Server == leader)],
                _ => Enumerable.Range(0, Members).ToArray(),
            };

            // Writers on every member; each key is written once, so an acknowledged key must be there with its value.
            var acknowledged = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
            using var stopWriters = new CancellationTokenSource(Bound);
            // Captured, and with a deadline of its own: a failing assertion disposes the source (and its timer) before
            // the writers are stopped, and they must still end by themselves.
            var stopToken = stopWriters.Token;
            var writersDeadline = DateTime.UtcNow + Bound;
            var next = 0;
            var writers = Enumerable.Range(0, 6).Select(w => Task.Run(async () =>
            {
                while (!stopToken.IsCancellationRequested && DateTime.UtcNow < writersDeadline)
                {
                    var i = Interlocked.Increment(ref next);
                    var member = Volatile.Read(ref members[w % Members]);
                    if (member is null || member.IsCut)
                    {
                        await Task.Delay(5);
                        continue;
                    }

                    try
                    {
                        await member.PutAsync($"k/{i:D6}", $"v{i}", stopToken);
                        acknowledged[$"k/{i:D6}"] = $"v{i}";
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        // Unknown outcome (the member lost power, no leader for a while, the writers stopped).
                    }
                }
            })).ToArray();

            // Cut after some writes were acknowledged, at a moment when every victim has disk writes in flight.
            var deadline = DateTime.UtcNow + Bound;
            var victimsNow = cut.Select(i => members[i]!).ToList();
            while (acknowledged.Count < 300 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(10);
            }

            var inFlight = await Task.Run(() =>
            {
                while (!victimsNow.All(v => v.WritesInFlight) && DateTime.UtcNow < deadline)
                {
                    Thread.SpinWait(20); // looking for the moment; bounded by the deadline
                }

                foreach (var victim in victimsNow)
                {
                    victim.CutPower();
                }

                return victimsNow.Sum(v => v.InFlightAtCut);
            });
            foreach (var victim in victimsNow)
            {
                await victim.Server.CutPeerLinksAsync().AsTask().WaitAsync(Bound);
            }

            var acknowledgedBeforeCut = acknowledged.Count;
            output.WriteLine($"{victims}: {acknowledgedBeforeCut} writes acknowledged, {inFlight} disk writes in flight at the cut");
            inFlight.Should().BeGreaterThan(0, "the cut hits writes the disks had not confirmed");

            foreach (var i in cut)
            {
                var victim = members[i]!;
                abandoned.Add(victim);
                await victim.AbandonAsync();
                var rolledBack = await victim.ApplyLossAsync(rng);
                output.WriteLine($"  member {i}: {rolledBack} sectors rolled back");

                // The machine comes back with what reached its disk. The dead member's threads still hold the old
                // files, so the new one starts on a copy and the old one is let finish into nothing.
                CrashImage.Copy(victim.DataDir, victim.DataDir + "-after-cut");
                victim.ReleaseDiscarding();
                Volatile.Write(ref members[i], await PoweredMember.StartAsync(victim.DataDir + "-after-cut", i, peerPorts[i], clientPorts[i], initial));
            }

            // Writes go on after the restart; then the writers stop and every member must catch up.
            var resumed = acknowledged.Count;
            while (acknowledged.Count < resumed + 100 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }

            await stopWriters.CancelAsync();
            await Task.WhenAll(writers);
            acknowledged.Count.Should().BeGreaterThan(resumed, "writes resume after the restart");

            var running = members.Select(m => m!.Server).ToList();
            leader = await WaitLeaderAsync(members);
            await leader.PutAsync("final", "x");

            // A write a writer gave up on when it was stopped may still be forwarded and committed at any time (a
            // proposal waiting on a member for a leader goes out once there is one), so the members are compared at
            // one revision that each of them has applied, not at whatever each holds when it is looked at.
            var revision = leader.Host.Store.CurrentRevision;
            var index = leader.Host.Store.ConsistentIndex; // read after the revision: it covers the entry that made it
            foreach (var member in running)
            {
                using var timeout = new CancellationTokenSource(Bound);
                await member.Host.WaitAppliedAsync(index, timeout.Token);
            }

            output.WriteLine($"{acknowledged.Count} writes acknowledged in all; compared at revision {revision} (leader applied index {index})");
            var leaderHistory = History(leader.Host.Store, revision);
            var leaderHash = leader.Host.Store.HashKV(revision);
            leaderHash.Error.Should().Be(KvStore.Storage.Mvcc.MvccError.None);
            foreach (var member in running)
            {
                var store = member.Host.Store;
                var missing = acknowledged.Where(kv => store.Range(System.Text.Encoding.UTF8.GetBytes(kv.Key), [], default).Kvs is not [var stored]
                    || System.Text.Encoding.UTF8.GetString(stored.Value) != kv.Value).Select(kv => kv.Key).ToList();
                missing.Should().BeEmpty("every acknowledged write survives the power cut on member {0}", running.IndexOf(member));
                History(store, revision).Should().Equal(leaderHistory, "member {0} holds the leader's revision records up to revision {1}", running.IndexOf(member), revision);
                store.HashKV(revision).Hash.Should().Be(leaderHash.Hash, "member {0} converges to the leader's HashKV at revision {1}", running.IndexOf(member), revision);
            }
        }
        finally
        {
            foreach (var member in members)
            {
                if (member is null || abandoned.Contains(member))
                {
                    continue;
                }

                if (member.IsCut)
                {
                    // Cut but not yet abandoned (the test failed in between): its frozen disks would hold a stop
                    // forever (a checkpoint waiting for its writes), so it is let finish into nothing instead.
                    await member.AbandonAsync();
                    member.ReleaseDiscarding();
                }
                else
                {
                    await member.DisposeAsync();
                }
            }

            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                // An abandoned member may still hold files; the temp directory goes with the machine.
            }
        }
    }

    /// <summary>Every revision record up to <paramref name="revision"/> in order, so a diverged member fails naming the revisions before the hash compares.</summary>
    private static List<string> History(KvStore.Storage.Mvcc.MvccStore store, long revision) =>
        store.ReadEvents([0], [0], 1, revision, 0)
            .Select(e => $"{e.Kv.ModRevision} {e.Type} {System.Text.Encoding.UTF8.GetString(e.Kv.Key)} create {e.Kv.CreateRevision} version {e.Kv.Version} lease {e.Kv.Lease} = {System.Text.Encoding.UTF8.GetString(e.Kv.Value)}")
            .ToList();

    private static Task<FullServer> WaitLeaderAsync(PoweredMember?[] members) =>
        FullServer.WaitLeaderAsync(members.Select(m => m!.Server).ToList());

    /// <summary>A member (<see cref="FullServer"/>) whose WAL and store (log and checkpoint files) run on devices that lose power together.</summary>
    private sealed class PoweredMember : IAsyncDisposable
    {
        private readonly PowerDomain _power;

        private PoweredMember(FullServer server, PowerDomain power, string dataDir)
        {
            Server = server;
            _power = power;
            DataDir = dataDir;
        }

        public FullServer Server { get; }

        public RaftHost Host => Server.Host;

        public string DataDir { get; }

        public bool IsCut => _power.IsCut;

        public bool WritesInFlight => _power.InFlight() > 0;

        /// <summary>Disk writes that had not completed when the power was cut.</summary>
        public int InFlightAtCut { get; private set; }

        public static async Task<PoweredMember> StartAsync(string dataDir, int i, int peerPort, int clientPort, string initialCluster)
        {
            var power = new PowerDomain();
            var storage = new MemberStorage(dataDir, power.Wrap, power.Wrap, power.Wrap);
            var server = await FullServer.StartAsync(Path.GetDirectoryName(dataDir)!, i, peerPort, clientPort, initialCluster, storage: storage);
            return new PoweredMember(server, power, dataDir);
        }

        public async Task PutAsync(string key, string value, CancellationToken cancellationToken)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            await Host.ProposeAsync(
                new InternalRequest { Put = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) } },
                timeout.Token);
        }

        /// <summary>The machine stops: from now on nothing reaches its disk and nothing the disk had not confirmed completes.</summary>
        public void CutPower()
        {
            _power.CutPower(freeze: true);
            InFlightAtCut = _power.InFlight();
        }

        public Task AbandonAsync() => Server.AbandonAsync();

        /// <summary>Rewrites the files as the power cut left them; returns how many sectors were rolled back.</summary>
        public Task<int> ApplyLossAsync(Random rng) => _power.ApplyLossAsync(rng, Bound);

        /// <summary>After the restart on a copy: the dead member's frozen storage lets its threads finish into nothing.</summary>
        public void ReleaseDiscarding() => _power.ReleaseDiscarding();

        public ValueTask DisposeAsync() => Server.DisposeAsync();
    }
}
