using System.Net.Sockets;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.EndToEnd.Cluster;
using KvStore.EndToEnd.Linearizability;

namespace KvStore.EndToEnd.Faults;

/// <summary>
/// Concurrent clients on a small key set, each on raw gRPC (no client retries) to a member of its own choosing per
/// operation: get, put, delete, compare-and-set (a Txn comparing the value, the mod_revision, or "absent"), and
/// two-key txns (two puts, or two gets). Every operation is recorded with its interval and outcome; values are
/// unique, so a value read names the write that produced it.
/// </summary>
public sealed class KvWorkload
{
    public const string Prefix = "/faults/";

    private readonly IReadOnlyList<ClusterMember> _members;
    private readonly WorkloadChannels _channels;
    private readonly HistoryRecorder _history;
    private readonly int _clients;
    private readonly string[] _keys;
    private readonly int _seed;
    private readonly TimeSpan _opTimeout;

    public KvWorkload(IReadOnlyList<ClusterMember> members, WorkloadChannels channels, HistoryRecorder history, int seed, int clients, int keys, TimeSpan opTimeout)
    {
        _members = members;
        _channels = channels;
        _history = history;
        _seed = seed;
        _clients = clients;
        _keys = [.. Enumerable.Range(0, keys).Select(i => $"{Prefix}k{i}")];
        _opTimeout = opTimeout;
    }

    /// <summary>Runs every client until <paramref name="stop"/> fires or each has issued <paramref name="maxOpsPerClient"/> operations.</summary>
    public Task RunAsync(int maxOpsPerClient, CancellationToken stop) =>
        Task.WhenAll(Enumerable.Range(0, _clients).Select(c => Task.Run(() => ClientLoopAsync(c, maxOpsPerClient, stop), CancellationToken.None)));

    private async Task ClientLoopAsync(int client, int maxOps, CancellationToken stop)
    {
        // Each client has its own seeded stream: the mix of operations is reproducible (their timing is not).
        var rng = new Random(HashCode.Combine(_seed, client));
        var lastSeen = new Dictionary<string, (string? Value, long ModRevision)>(StringComparer.Ordinal);
        for (var i = 0; i < maxOps && !stop.IsCancellationRequested; i++)
        {
            var member = _members[rng.Next(_members.Count)];
            var key = _keys[rng.Next(_keys.Length)];
            var value = $"c{client}-{i}";
            var roll = rng.Next(100);
            var outcome = roll switch
            {
                < 35 => await ReadAsync(client, member, key, lastSeen),
                < 60 => await WriteAsync(client, member, key, value),
                < 68 => await DeleteAsync(client, member, key),
                < 88 => await CasAsync(client, member, key, value, lastSeen, byRevision: rng.Next(2) == 0),
                < 94 => await MultiPutAsync(client, member, key, _keys[(Array.IndexOf(_keys, key) + 1) % _keys.Length], value),
                _ => await MultiReadAsync(client, member, key, _keys[(Array.IndexOf(_keys, key) + 1) % _keys.Length], lastSeen),
            };
            if (outcome == KvOutcome.Failed)
            {
                // The member is down: do not spin on its closed port (pacing only; nothing waits on this).
                await Task.Delay(50, CancellationToken.None);
            }
        }
    }

    private async Task<KvOutcome> ReadAsync(int client, ClusterMember m, string key, Dictionary<string, (string?, long)> lastSeen)
    {
        var id = _history.NextId();
        var invoked = _history.Now;
        var (outcome, r) = await CallAsync(m, ch => new KV.KVClient(ch).RangeAsync(new RangeRequest { Key = Bytes(key) }, deadline: Deadline()).ResponseAsync);
        var completed = _history.Now;
        var observed = r?.Kvs.Count > 0 ? r.Kvs[0].Value.ToStringUtf8() : null;
        if (r is not null)
        {
            lastSeen[key] = (observed, r.Kvs.Count > 0 ? r.Kvs[0].ModRevision : 0);
        }

        _history.Add(new KvOperation(id, client, m.Name, key, KvOpKind.Read, null, null, invoked, completed, outcome, Observed: observed));
        return outcome;
    }

    private async Task<KvOutcome> WriteAsync(int client, ClusterMember m, string key, string value)
    {
        var id = _history.NextId();
        var invoked = _history.Now;
        var (outcome, r) = await CallAsync(m, ch => new KV.KVClient(ch).PutAsync(new PutRequest { Key = Bytes(key), Value = Bytes(value) }, deadline: Deadline()).ResponseAsync);
        var completed = _history.Now;
        _history.Add(new KvOperation(id, client, m.Name, key, KvOpKind.Write, value, null, invoked, completed, outcome));
        if (r is not null)
        {
            _history.Acknowledge(new AckedWrite(key, value, r.Header.Revision, id));
        }

        return outcome;
    }

    private async Task<KvOutcome> DeleteAsync(int client, ClusterMember m, string key)
    {
        var id = _history.NextId();
        var invoked = _history.Now;
        var (outcome, r) = await CallAsync(m, ch => new KV.KVClient(ch).DeleteRangeAsync(new DeleteRangeRequest { Key = Bytes(key) }, deadline: Deadline()).ResponseAsync);
        var completed = _history.Now;
        _history.Add(new KvOperation(id, client, m.Name, key, KvOpKind.Delete, null, null, invoked, completed, outcome));
        if (r is { Deleted: > 0 })
        {
            _history.Acknowledge(new AckedWrite(key, null, r.Header.Revision, id));
        }

        return outcome;
    }

    /// <summary>
    /// Put <paramref name="value"/> if the key still holds what this client last read. Comparing the mod_revision
    /// of that read is the same as comparing its value: each value is written once, at one revision.
    /// </summary>
    private async Task<KvOutcome> CasAsync(int client, ClusterMember m, string key, string value, Dictionary<string, (string? Value, long ModRevision)> lastSeen, bool byRevision)
    {
        var (expected, modRevision) = lastSeen.TryGetValue(key, out var seen) ? seen : (null, 0);
        var compare = expected is null
            ? new Compare { Key = Bytes(key), Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0 }
            : byRevision
                ? new Compare { Key = Bytes(key), Target = Compare.Types.CompareTarget.Mod, Result = Compare.Types.CompareResult.Equal, ModRevision = modRevision }
                : new Compare { Key = Bytes(key), Target = Compare.Types.CompareTarget.Value, Result = Compare.Types.CompareResult.Equal, Value = Bytes(expected) };
        var txn = new TxnRequest { Compare = { compare }, Success = { new RequestOp { RequestPut = new PutRequest { Key = Bytes(key), Value = Bytes(value) } } } };
        var id = _history.NextId();
        var invoked = _history.Now;
        var (outcome, r) = await CallAsync(m, ch => new KV.KVClient(ch).TxnAsync(txn, deadline: Deadline()).ResponseAsync);
        var completed = _history.Now;
        _history.Add(new KvOperation(id, client, m.Name, key, KvOpKind.Cas, value, expected, invoked, completed, outcome, Succeeded: r?.Succeeded == true));
        if (r is { Succeeded: true })
        {
            _history.Acknowledge(new AckedWrite(key, value, r.Header.Revision, id));
        }

        return outcome;
    }

    /// <summary>Two puts in one txn: checked as two writes over the same interval (per-key linearizability does not see atomicity across keys).</summary>
    private async Task<KvOutcome> MultiPutAsync(int client, ClusterMember m, string key1, string key2, string value)
    {
        var txn = new TxnRequest
        {
            Success =
            {
                new RequestOp { RequestPut = new PutRequest { Key = Bytes(key1), Value = Bytes(value + "a") } },
                new RequestOp { RequestPut = new PutRequest { Key = Bytes(key2), Value = Bytes(value + "b") } },
            },
        };
        int id1 = _history.NextId(), id2 = _history.NextId();
        var invoked = _history.Now;
        var (outcome, r) = await CallAsync(m, ch => new KV.KVClient(ch).TxnAsync(txn, deadline: Deadline()).ResponseAsync);
        var completed = _history.Now;
        _history.Add(new KvOperation(id1, client, m.Name, key1, KvOpKind.Write, value + "a", null, invoked, completed, outcome));
        _history.Add(new KvOperation(id2, client, m.Name, key2, KvOpKind.Write, value + "b", null, invoked, completed, outcome));
        if (r is not null)
        {
            _history.Acknowledge(new AckedWrite(key1, value + "a", r.Header.Revision, id1));
            _history.Acknowledge(new AckedWrite(key2, value + "b", r.Header.Revision, id2));
        }

        return outcome;
    }

    private async Task<KvOutcome> MultiReadAsync(int client, ClusterMember m, string key1, string key2, Dictionary<string, (string?, long)> lastSeen)
    {
        var txn = new TxnRequest
        {
            Success =
            {
                new RequestOp { RequestRange = new RangeRequest { Key = Bytes(key1) } },
                new RequestOp { RequestRange = new RangeRequest { Key = Bytes(key2) } },
            },
        };
        int id1 = _history.NextId(), id2 = _history.NextId();
        var invoked = _history.Now;
        var (outcome, r) = await CallAsync(m, ch => new KV.KVClient(ch).TxnAsync(txn, deadline: Deadline()).ResponseAsync);
        var completed = _history.Now;
        string? Seen(int i, string key)
        {
            if (r is null)
            {
                return null;
            }

            var kvs = r.Responses[i].ResponseRange.Kvs;
            lastSeen[key] = (kvs.Count > 0 ? kvs[0].Value.ToStringUtf8() : null, kvs.Count > 0 ? kvs[0].ModRevision : 0);
            return kvs.Count > 0 ? kvs[0].Value.ToStringUtf8() : null;
        }

        _history.Add(new KvOperation(id1, client, m.Name, key1, KvOpKind.Read, null, null, invoked, completed, outcome, Observed: Seen(0, key1)));
        _history.Add(new KvOperation(id2, client, m.Name, key2, KvOpKind.Read, null, null, invoked, completed, outcome, Observed: Seen(1, key2)));
        return outcome;
    }

    /// <summary>
    /// Runs one call. A connection that was refused never carried the request (failed: no effect); any other error
    /// or a timeout leaves the outcome unknown, since the server may have proposed it already.
    /// </summary>
    private async Task<(KvOutcome Outcome, T? Response)> CallAsync<T>(ClusterMember m, Func<Grpc.Net.Client.GrpcChannel, Task<T>> call)
        where T : class
    {
        try
        {
            return (KvOutcome.Ok, await call(_channels.For(m)));
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && IsConnectionRefused(e))
        {
            return (KvOutcome.Failed, null);
        }
        catch (RpcException)
        {
            return (KvOutcome.Unknown, null);
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

    private static ByteString Bytes(string s) => ByteString.CopyFromUtf8(s);
}
