using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Hosting;
using KvStore.Server.Identity;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Wal;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// Power cuts of members of a running 3-member cluster (one follower, the leader, all three at once) while clients
/// write through every member. Each member's WAL and MVCC store run over <see cref="PowerLossDevice"/>: at the cut,
/// writes the disk had not confirmed are dropped or torn at sector granularity, the member is abandoned as a dead
/// machine leaves it (no shutdown, no checkpoint), and it restarts from what reached the disk. Every acknowledged
/// write must then be on every member, and all members must converge to the same revision and HashKV.
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
        var initial = string.Join(',', peerPorts.Select((p, i) => $"p{i}=http://127.0.0.1:{p}"));
        var members = new PoweredMember?[Members];
        var abandoned = new List<PoweredMember>();
        try
        {
            for (var i = 0; i < Members; i++)
            {
                members[i] = await PoweredMember.StartAsync(Path.Combine(root, $"p{i}"), i, peerPorts[i], clientPorts[i], initial);
            }

            var leader = await WaitLeaderAsync(members);
            var cut = victims switch
            {
                Victims.OneFollower => [Array.FindIndex(members, m => m != leader)],
                Victims.Leader => [Array.IndexOf(members, leader)],
                _ => Enumerable.Range(0, Members).ToArray(),
            };

            // Writers on every member; each key is written once, so an acknowledged key must be there with its value.
            var acknowledged = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
            using var stopWriters = new CancellationTokenSource(Bound);
            var next = 0;
            var writers = Enumerable.Range(0, 6).Select(w => Task.Run(async () =>
            {
                while (!stopWriters.IsCancellationRequested)
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
                        await member.PutAsync($"k/{i:D6}", $"v{i}", stopWriters.Token);
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
                CopyDirectory(victim.DataDir, victim.DataDir + "-after-cut");
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

            var running = members.Select(m => m!).ToList();
            leader = await WaitLeaderAsync(members);
            await leader.PutAsync("final", "x", CancellationToken.None);
            var index = leader.Host.Store.ConsistentIndex;
            foreach (var member in running)
            {
                using var timeout = new CancellationTokenSource(Bound);
                await member.Host.WaitAppliedAsync(index, timeout.Token);
            }

            output.WriteLine($"{acknowledged.Count} writes acknowledged in all; leader applied index {index}");
            var leaderHash = leader.Host.Store.HashKV(0);
            foreach (var member in running)
            {
                var store = member.Host.Store;
                var missing = acknowledged.Where(kv => store.Range(System.Text.Encoding.UTF8.GetBytes(kv.Key), [], default).Kvs is not [var stored]
                    || System.Text.Encoding.UTF8.GetString(stored.Value) != kv.Value).Select(kv => kv.Key).ToList();
                missing.Should().BeEmpty("every acknowledged write survives the power cut on member {0}", Array.IndexOf(members, member));
                store.CurrentRevision.Should().Be(leader.Host.Store.CurrentRevision);
                store.HashKV(0).Hash.Should().Be(leaderHash.Hash, "member {0} converges to the leader's HashKV", Array.IndexOf(members, member));
            }
        }
        finally
        {
            foreach (var member in members)
            {
                if (member is not null && !abandoned.Contains(member))
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

    private static void CopyDirectory(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        }

        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
        }
    }

    private static async Task<PoweredMember> WaitLeaderAsync(PoweredMember?[] members)
    {
        using var timeout = new CancellationTokenSource(Bound);
        while (true)
        {
            var all = members.Select(m => m!).ToList();
            var id = all[0].Host.Membership.Members.Count > 0 ? all[0].State.LeaderId : 0;
            var leader = all.FirstOrDefault(s => s.Host.MemberId == id);
            if (leader is not null && all.All(s => s.State.LeaderId == id))
            {
                return leader;
            }

            await Task.WhenAny(all.Select(s => s.Host.NextChangeAsync(timeout.Token)));
            timeout.Token.ThrowIfCancellationRequested();
        }
    }

    /// <summary>One member as the real server builds it, with its WAL and store on devices that can lose power.</summary>
    private sealed class PoweredMember : IAsyncDisposable
    {
        private readonly WriteAheadLog _wal;
        private readonly MvccStore _store;
        private readonly PowerLossDevice _walDevice;
        private readonly PowerLossDevice _storeDevice;
        private bool _stopped;

        private PoweredMember(WebApplication app, WriteAheadLog wal, MvccStore store, PowerLossDevice walDevice, PowerLossDevice storeDevice)
        {
            App = app;
            _wal = wal;
            _store = store;
            _walDevice = walDevice;
            _storeDevice = storeDevice;
            Host = app.Services.GetRequiredService<RaftHost>();
            State = app.Services.GetRequiredService<Node.NodeState>();
        }

        public WebApplication App { get; }

        public required string DataDir { get; init; }

        public RaftHost Host { get; }

        public Node.NodeState State { get; }

        public bool IsCut => _walDevice.IsCut;

        public bool WritesInFlight => _walDevice.InFlight + _storeDevice.InFlight > 0;

        /// <summary>Disk writes that had not completed when the power was cut.</summary>
        public int InFlightAtCut { get; private set; }

        public static async Task<PoweredMember> StartAsync(string dataDir, int i, int peerPort, int clientPort, string initialCluster)
        {
            var options = new ServerOptions
            {
                Name = $"p{i}",
                DataDir = dataDir,
                InitialCluster = initialCluster,
                InitialClusterState = "new",
                InitialClusterToken = "power-cut",
                HeartbeatIntervalMs = 50,
                ElectionTimeoutMs = 500,
                SnapshotCount = 200, // store checkpoints (and WAL releases) happen during the run
                ListenClientUrls = [new Uri($"http://127.0.0.1:{clientPort}")],
                AdvertiseClientUrls = [new Uri($"http://127.0.0.1:{clientPort}")],
                ListenPeerUrls = [new Uri($"http://127.0.0.1:{peerPort}")],
                InitialAdvertisePeerUrls = [new Uri($"http://127.0.0.1:{peerPort}")],
            };
            var identity = MemberIdentity.FromOptions(options);
            var memberDir = Path.Combine(options.EffectiveDataDir, "member");
            Directory.CreateDirectory(memberDir);
            PowerLossDevice? walDevice = null;
            PowerLossDevice? storeDevice = null;
            var wal = WriteAheadLog.Open(Path.Combine(memberDir, "wal"), NullLogger.Instance, inner => walDevice = new PowerLossDevice(inner));
            var store = MvccStore.Open(
                new MvccStoreOptions
                {
                    DataDirectory = Path.Combine(memberDir, "kv"),
                    MemorySizeBits = 22,
                    PageSizeBits = 16,
                    IndexBuckets = 1 << 12,
                    WrapLogDevice = inner => storeDevice = new PowerLossDevice(inner),
                },
                NullLogger.Instance);
            var app = ServerHost.Build(options, identity, store, wal, Serilog.Core.Logger.None);
            await app.StartAsync();
            return new PoweredMember(app, wal, store, walDevice!, storeDevice!) { DataDir = dataDir };
        }

        public async Task PutAsync(string key, string value, CancellationToken cancellationToken)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            await Host.ProposeAsync(
                new InternalRequest { Put = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) } },
                timeout.Token);
        }

        /// <summary>The machine stops: from now on nothing reaches either disk and nothing the disks had not confirmed completes.</summary>
        public void CutPower()
        {
            _walDevice.CutPower(freeze: true);
            _storeDevice.CutPower(freeze: true);
            InFlightAtCut = _walDevice.InFlight + _storeDevice.InFlight;
        }

        /// <summary>
        /// Takes the dead member off the network: its listeners close so the restarted member can bind the same ports.
        /// Its storage is not closed (a dead machine does not checkpoint); threads waiting on the frozen disks stay.
        /// </summary>
        public async Task AbandonAsync()
        {
            _stopped = true;
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            var stopping = App.StopAsync(stop.Token);
            await Task.WhenAny(stopping, Task.Delay(TimeSpan.FromSeconds(10)));
        }

        /// <summary>Rewrites the files as the power cut left them; returns how many sectors were rolled back.</summary>
        public async Task<int> ApplyLossAsync(Random rng) =>
            await _walDevice.ApplyLossAsync(rng, Bound) + await _storeDevice.ApplyLossAsync(rng, Bound);

        /// <summary>After the restart on a copy: the dead member's frozen storage lets its threads finish into nothing.</summary>
        public void ReleaseDiscarding()
        {
            _walDevice.ReleaseDiscarding();
            _storeDevice.ReleaseDiscarding();
        }

        public async ValueTask DisposeAsync()
        {
            if (_stopped)
            {
                return;
            }

            _stopped = true;
            using var timeout = new CancellationTokenSource(Bound);
            await App.StopAsync(timeout.Token);
            await App.DisposeAsync();
            _store.Dispose();
            await _wal.DisposeAsync();
        }
    }
}
