using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Api;
using KvStore.Server.Watch;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace KvStore.Server.Tests.Cluster;

/// <summary>
/// A watch on a running follower that falls behind the leader's compacted log and catches up through a snapshot
/// install: it goes on with every event once and in order (the snapshot carries the history it needs), or, when that
/// history was compacted meanwhile, it is cancelled with the compact revision after the events it had.
/// </summary>
public sealed partial class SnapshotInstallTests
{
    [Fact]
    public async Task A_watch_on_a_follower_continues_across_a_snapshot_install_or_is_cancelled_with_the_compact_revision()
    {
        var root = Path.Combine(Path.GetTempPath(), "kvstore-snapwatch-" + Guid.NewGuid().ToString("N")[..8]);
        var peerPorts = LoopbackPorts.Take(3);
        var clientPorts = LoopbackPorts.Take(3);
        using var gate = new PeerGate(peerPorts[2]);
        var initial = string.Join(',', peerPorts.Select((p, i) => $"s{i}=http://127.0.0.1:{(i == 2 ? gate.Port : p)}"));
        var servers = new List<FullServer>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                servers.Add(await FullServer.StartAsync(root, i, peerPorts[i], clientPorts[i], initial, i == 2 ? gate.Port : null));
            }

            // s2 sits behind the gate; it must be a follower for the test to be about a follower.
            var leader = await WaitLeaderAsync(servers);
            while (leader == servers[2])
            {
                using (var moving = Timeout())
                {
                    await leader.Host.Members.MoveLeaderAsync(servers[0].Host.MemberId, moving.Token);
                }

                leader = await WaitLeaderAsync(servers);
            }

            var follower = servers[2];
            var installs = 0;
            follower.Host.SnapshotInstalled += _ => Interlocked.Increment(ref installs);
            var start = await leader.PutAsync("k/000", "v0");
            await AppliedAsync(follower, leader.Host.Store.ConsistentIndex);

            // One watcher on the follower, from the revision after that put, with prev_kv.
            var hub = follower.App.Services.GetRequiredService<WatchHub>();
            using var session = hub.OpenSession();
            var responses = Channel.CreateUnbounded<WatchResponse>();
            using var stop = new CancellationTokenSource();
            var header = follower.App.Services.GetRequiredService<HeaderFactory>();
            var sendLoop = session.RunSendLoopAsync(r => responses.Writer.WriteAsync(r).AsTask(), header.Create, stop.Token);
            session.Create(new WatchCreateRequest { Key = ByteString.CopyFromUtf8("k/"), RangeEnd = ByteString.CopyFromUtf8("k0"), StartRevision = start + 1, PrevKv = true });
            var received = new List<Mvccpb.Event>();

            // Round 1: cut off, the follower misses more than the leader keeps of its log; back, it gets a snapshot.
            gate.Close();
            var end = await WriteAsync(leader, servers, 5_300, 0);
            end = Math.Max(end, await WriteUntilCompactedPastAsync(leader, servers, follower, 0));
            gate.Open();
            await AppliedAsync(follower, leader.Host.Store.ConsistentIndex, 90);
            installs.Should().Be(1, "the follower was behind the leader's compacted log");
            // A put retried after a timeout may also have been applied, after the last acknowledged one: wait for at
            // least the last acknowledged revision, and expect every revision up to what arrived.
            await ReceiveUntilAsync(responses, received, r => received.Count > 0 && received[^1].Kv.ModRevision >= end);
            received.Select(e => e.Kv.ModRevision).Should().Equal(
                Enumerable.Range((int)start + 1, received.Count).Select(r => (long)r), "every event once and in order across the install");
            var last = new Dictionary<string, long> { ["k/000"] = start };
            foreach (var e in received)
            {
                var key = e.Kv.Key.ToStringUtf8();
                (e.PrevKv?.ModRevision ?? 0).Should().Be(last.GetValueOrDefault(key), "prev_kv of {0}@{1} comes from the snapshot's history", key, e.Kv.ModRevision);
                last[key] = e.Kv.ModRevision;
            }

            // Round 2: while cut off, the cluster compacts past what the watcher still needs; the install then cancels
            // it with that compact revision, after nothing it should not have. When the follower had already applied
            // up to the compaction before the cut took hold (a loaded machine), its watch needs nothing compacted and
            // must instead go on with every event: either way no event is skipped or repeated.
            gate.Close();
            var compactAt = await WriteAsync(leader, servers, 100, 1);
            await leader.ProposeAsync(new InternalRequest { Compaction = new CompactionRequest { Revision = compactAt } });
            var end2 = await WriteAsync(leader, servers, 5_300, 2);
            end2 = Math.Max(end2, await WriteUntilCompactedPastAsync(leader, servers, follower, 2));
            gate.Open();
            await AppliedAsync(follower, leader.Host.Store.ConsistentIndex, 90);
            installs.Should().Be(2);
            var final = await ReceiveUntilAsync(responses, received, r => r.Canceled || (received.Count > 0 && received[^1].Kv.ModRevision >= end2));

            received.Select(e => e.Kv.ModRevision).Should().Equal(
                Enumerable.Range((int)start + 1, received.Count).Select(r => (long)r), "the events are contiguous, each once");
            if (final.Canceled)
            {
                received[^1].Kv.ModRevision.Should().BeLessThan(compactAt);
                (final.WatchId, final.CompactRevision).Should().Be((0L, compactAt));
                hub.Counts.Should().Be((0, 0));
            }
            else
            {
                received[^1].Kv.ModRevision.Should().BeGreaterThanOrEqualTo(end2);
            }

            await stop.CancelAsync();
            try
            {
                await sendLoop;
            }
            catch (OperationCanceledException)
            {
            }
        }
        finally
        {
            foreach (var s in servers)
            {
                await s.DisposeAsync();
            }

            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Puts through the leader and the other member that is not behind the gate; returns the last revision.</summary>
    private static async Task<long> WriteAsync(FullServer leader, List<FullServer> servers, int writes, int round)
    {
        var writers = new[] { leader, servers.First(s => s != leader && s != servers[2]) };
        var next = -1;
        long last = 0;
        await Task.WhenAll(Enumerable.Range(0, 32).Select(w => Task.Run(async () =>
        {
            for (var i = Interlocked.Increment(ref next); i < writes; i = Interlocked.Increment(ref next))
            {
                // A loaded machine may cost the 200 ms-election cluster a leader now and then: retry a timed-out put (a
                // put applied twice is just one more revision, which the assertions allow for).
                for (var attempt = 1; ; attempt++)
                {
                    try
                    {
                        InterlockedMax(ref last, await writers[w % 2].PutAsync($"k/{i % 300:D3}", $"r{round}-{i}"));
                        break;
                    }
                    catch (EtcdException) when (attempt < 5)
                    {
                    }
                }
            }
        })));
        return last;

        static void InterlockedMax(ref long target, long value)
        {
            for (var current = Interlocked.Read(ref target); value > current; current = Interlocked.Read(ref target))
            {
                if (Interlocked.CompareExchange(ref target, value, current) == current)
                {
                    return;
                }
            }
        }
    }

    /// <summary>
    /// The leader snapshots every 50 entries, one snapshot at a time, and its log's start moves only when one ends; on a
    /// loaded machine one can take seconds (its flush paced behind the WAL's fsyncs), so 5,300 writes may end before
    /// the start passed the follower. Until it has (bounded): awaits the snapshot in flight, then writes 50 more to start
    /// the next. Returns the last revision written, 0 when nothing more was needed.
    /// </summary>
    private static async Task<long> WriteUntilCompactedPastAsync(FullServer leader, List<FullServer> servers, FullServer follower, int round)
    {
        long last = 0;
        for (var batch = 0; ; batch++)
        {
            await leader.Host.SnapshotInFlight.WaitAsync(TimeSpan.FromSeconds(60));
            if (leader.Host.LogIndexes.First > follower.Host.LogIndexes.Last + 1)
            {
                return last;
            }

            batch.Should().BeLessThan(20, "the leader compacts its log past a follower that stopped hearing from it (leader {0}, follower {1})", leader.Host.LogIndexes, follower.Host.LogIndexes);
            last = await WriteAsync(leader, servers, 50, round);
        }
    }

    /// <summary>Collects events until <paramref name="done"/> holds for a response; returns that response.</summary>
    private static async Task<WatchResponse> ReceiveUntilAsync(Channel<WatchResponse> responses, List<Mvccpb.Event> received, Func<WatchResponse, bool> done)
    {
        using var timeout = Timeout(60);
        try
        {
            while (true)
            {
                var r = await responses.Reader.ReadAsync(timeout.Token);
                received.AddRange(r.Events);
                if (done(r))
                {
                    return r;
                }
            }
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            var last = received.Count > 0 ? received[^1].Kv.ModRevision : 0;
            throw new TimeoutException($"no awaited watch response within 60 s: {received.Count} events received, the last at revision {last}");
        }
    }

    /// <summary>
    /// A TCP forwarder in front of a member's peer port: closed, it drops every connection and refuses new ones, so the
    /// member hears nothing from the others (its own messages still go out, and pre-vote keeps it from disrupting them).
    /// </summary>
    private sealed class PeerGate : IDisposable
    {
        private readonly TcpListener _listener;
        private readonly int _target;
        private readonly Lock _lock = new();
        private readonly List<Socket> _open = [];
        private readonly CancellationTokenSource _stop = new();
        private bool _closed;

        public PeerGate(int target)
        {
            _target = target;
            _listener = new TcpListener(IPAddress.Loopback, LoopbackPorts.TakeOne());
            _listener.Start();
            _ = AcceptLoopAsync();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public void Close()
        {
            lock (_lock)
            {
                _closed = true;
                foreach (var socket in _open)
                {
                    socket.Close(0);
                }

                _open.Clear();
            }
        }

        public void Open()
        {
            lock (_lock)
            {
                _closed = false;
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Stop();
            Close();
            _stop.Dispose();
        }

        private async Task AcceptLoopAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket inbound;
                try
                {
                    inbound = await _listener.AcceptSocketAsync(_stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    return;
                }

                _ = ForwardAsync(inbound);
            }
        }

        private async Task ForwardAsync(Socket inbound)
        {
            var outbound = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                lock (_lock)
                {
                    if (_closed)
                    {
                        inbound.Close(0);
                        outbound.Dispose();
                        return;
                    }

                    _open.Add(inbound);
                    _open.Add(outbound);
                }

                await outbound.ConnectAsync(IPAddress.Loopback, _target, _stop.Token);
                await Task.WhenAny(PumpAsync(inbound, outbound), PumpAsync(outbound, inbound));
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
            finally
            {
                lock (_lock)
                {
                    _open.Remove(inbound);
                    _open.Remove(outbound);
                }

                inbound.Close(0);
                outbound.Close(0);
            }
        }

        private async Task PumpAsync(Socket from, Socket to)
        {
            var buffer = new byte[64 * 1024];
            try
            {
                while (true)
                {
                    var n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                    if (n == 0)
                    {
                        return;
                    }

                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
        }
    }
}
