using System.Net.Sockets;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.EndToEnd.Cluster;

namespace KvStore.EndToEnd.Faults;

/// <summary>
/// One lease of the lease workload and what the clients know of it: the lease may exist from its grant on (an
/// unanswered grant too: the ID is the client's), and was renewed at the latest when the last grant or keep-alive
/// that may have reached the leader ended.
/// </summary>
public sealed class LeaseRecord(long id, string key, long ttlSeconds)
{
    public long Id { get; } = id;

    public string Key { get; } = key;

    public long TtlSeconds { get; } = ttlSeconds;

    /// <summary>µs since the run started: no grant or keep-alive of this lease took effect after this.</summary>
    public long RenewedBeforeUs { get; set; }

    /// <summary>µs since the run started when a revoke was acknowledged (the key is gone from then on), or null.</summary>
    public long? RevokedAtUs { get; set; }

    public override string ToString() => $"lease {Id:x} ({Key}, TTL {TtlSeconds} s, renewed before {RenewedBeforeUs / 1000} ms{(RevokedAtUs is { } r ? $", revoked at {r / 1000} ms" : string.Empty)})";
}

/// <summary>
/// Lease clients beside the key-value clients: each grants a lease (with an ID of its own, so an unanswered grant is
/// still known), puts one key under the workload's prefix attached to it, sends zero to two keep-alives, then revokes
/// it or abandons it to expire. After the run, <see cref="CheckExpiryAsync"/> checks that no key outlives its lease by
/// more than the TTL plus an election timeout.
/// </summary>
public sealed class LeaseWorkload
{
    public const string KeyPrefix = KvWorkload.Prefix + "lease/";

    private readonly IReadOnlyList<ClusterMember> _members;
    private readonly WorkloadChannels _channels;
    private readonly HistoryRecorder _history;
    private readonly int _seed;
    private readonly int _clients;
    private readonly TimeSpan _opTimeout;
    private readonly List<LeaseRecord> _leases = [];

    public LeaseWorkload(IReadOnlyList<ClusterMember> members, WorkloadChannels channels, HistoryRecorder history, int seed, int clients, TimeSpan opTimeout)
    {
        _members = members;
        _channels = channels;
        _history = history;
        _seed = seed;
        _clients = clients;
        _opTimeout = opTimeout;
    }

    public IReadOnlyList<LeaseRecord> Leases()
    {
        lock (_leases)
        {
            return [.. _leases];
        }
    }

    /// <summary>Runs every lease client until <paramref name="stop"/> fires or each has used <paramref name="maxLeasesPerClient"/> leases.</summary>
    public Task RunAsync(int maxLeasesPerClient, CancellationToken stop) =>
        Task.WhenAll(Enumerable.Range(0, _clients).Select(c => Task.Run(() => ClientLoopAsync(c, maxLeasesPerClient, stop), CancellationToken.None)));

    private async Task ClientLoopAsync(int client, int maxLeases, CancellationToken stop)
    {
        var rng = new Random(HashCode.Combine(_seed, "lease", client));
        for (var i = 0; i < maxLeases && !stop.IsCancellationRequested; i++)
        {
            var lease = new LeaseRecord(((client + 1) * 1_000_000L) + i + 1, $"{KeyPrefix}c{client}-{i}", rng.Next(2, 4));
            var (granted, _) = await CallAsync(_members[rng.Next(_members.Count)], ch => new Lease.LeaseClient(ch).LeaseGrantAsync(new LeaseGrantRequest { ID = lease.Id, TTL = lease.TtlSeconds }, deadline: Deadline()).ResponseAsync);
            if (granted == false)
            {
                await Task.Delay(50, CancellationToken.None); // refused: that member is down
                continue;
            }

            lease.RenewedBeforeUs = _history.Now;
            lock (_leases)
            {
                _leases.Add(lease);
            }

            var value = $"l{client}-{i}";
            var (_, put) = await CallAsync(_members[rng.Next(_members.Count)], ch => new KV.KVClient(ch).PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8(lease.Key), Value = ByteString.CopyFromUtf8(value), Lease = lease.Id }, deadline: Deadline()).ResponseAsync);
            if (put is not null)
            {
                _history.Acknowledge(new AckedWrite(lease.Key, value, put.Header.Revision, _history.NextId()));
            }

            for (var k = rng.Next(3); k > 0; k--)
            {
                await Task.Delay(rng.Next(200, 800), CancellationToken.None);
                var (renewed, _) = await CallAsync(_members[rng.Next(_members.Count)], ch => KeepAliveOnceAsync(ch, lease.Id));
                if (renewed != false)
                {
                    lease.RenewedBeforeUs = _history.Now;
                }
            }

            if (rng.Next(100) < 40)
            {
                var (_, revoked) = await CallAsync(_members[rng.Next(_members.Count)], ch => new Lease.LeaseClient(ch).LeaseRevokeAsync(new LeaseRevokeRequest { ID = lease.Id }, deadline: Deadline()).ResponseAsync);
                if (revoked is not null)
                {
                    lease.RevokedAtUs = _history.Now;
                }
            }

            await Task.Delay(rng.Next(100, 400), CancellationToken.None);
        }
    }

    /// <summary>
    /// After the run (clients stopped, faults over since <paramref name="calmSinceUs"/>, when a leader was known):
    /// a lease ends at the latest TTL after its last renewal or after the calm began (a new leader extends every
    /// lease), and its key must be gone by <paramref name="electionTimeout"/> plus one more TTL after that; a revoked
    /// lease's key is gone from the revoke's answer on. Polls every key with linearizable reads until each is gone;
    /// returns the violations and the largest time a key was still seen after its lease ended.
    /// </summary>
    public async Task<(IReadOnlyList<string> Violations, long MaxOverstayMs)> CheckExpiryAsync(long calmSinceUs, TimeSpan electionTimeout, CancellationToken cancel)
    {
        var pending = Leases().ToList();
        var violations = new List<string>();
        long maxOverstayUs = 0;
        var slackUs = (long)electionTimeout.TotalMicroseconds;
        var limitUs = pending.Count == 0 ? 0 : pending.Max(End) + (pending.Max(l => l.TtlSeconds) * 1_000_000) + slackUs + 30_000_000;
        var rng = new Random(_seed);
        while (pending.Count > 0 && _history.Now < limitUs && !cancel.IsCancellationRequested)
        {
            foreach (var lease in pending.ToList())
            {
                var invoked = _history.Now;
                var (ok, r) = await CallAsync(_members[rng.Next(_members.Count)], ch => new KV.KVClient(ch).RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8(lease.Key) }, deadline: Deadline()).ResponseAsync);
                if (ok != true || r is null)
                {
                    continue;
                }

                if (r.Kvs.Count == 0)
                {
                    pending.Remove(lease);
                    continue;
                }

                // The key existed at some instant after the read was sent.
                maxOverstayUs = Math.Max(maxOverstayUs, invoked - End(lease));
                var deadline = lease.RevokedAtUs ?? End(lease) + (lease.TtlSeconds * 1_000_000) + slackUs;
                if (invoked > deadline)
                {
                    violations.Add($"{lease.Key} still present {(invoked - deadline) / 1000} ms after its deadline {deadline / 1000} ms: {lease}");
                    pending.Remove(lease);
                }
            }

            await Task.Delay(100, CancellationToken.None);
        }

        violations.AddRange(pending.Select(l => $"{l.Key} never confirmed gone (checked until {limitUs / 1000} ms): {l}"));
        return (violations, Math.Max(0, maxOverstayUs / 1000));

        long End(LeaseRecord l) => Math.Max(l.RenewedBeforeUs, calmSinceUs) + (l.TtlSeconds * 1_000_000);
    }

    private static async Task<LeaseKeepAliveResponse> KeepAliveOnceAsync(Grpc.Net.Client.GrpcChannel ch, long id)
    {
        using var stream = new Lease.LeaseClient(ch).LeaseKeepAlive(deadline: DateTime.UtcNow + TimeSpan.FromSeconds(3));
        await stream.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = id });
        if (!await stream.ResponseStream.MoveNext())
        {
            throw new RpcException(new Status(StatusCode.Unavailable, "keep-alive stream ended without an answer"));
        }

        var response = stream.ResponseStream.Current;
        await stream.RequestStream.CompleteAsync();
        return response;
    }

    /// <summary>True: answered; false: the connection was refused (never reached a server); null: unknown.</summary>
    private async Task<(bool? Outcome, T? Response)> CallAsync<T>(ClusterMember m, Func<Grpc.Net.Client.GrpcChannel, Task<T>> call)
        where T : class
    {
        try
        {
            return (true, await call(_channels.For(m)));
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && IsConnectionRefused(e))
        {
            return (false, null);
        }
        catch (RpcException)
        {
            return (null, null);
        }
    }

    private static bool IsConnectionRefused(RpcException e)
    {
        for (Exception? x = e.Status.DebugException; x is not null; x = x.InnerException)
        {
            if (x is SocketException { SocketErrorCode: SocketError.ConnectionRefused })
            {
                return true;
            }
        }

        return false;
    }

    private DateTime Deadline() => DateTime.UtcNow + _opTimeout;
}
