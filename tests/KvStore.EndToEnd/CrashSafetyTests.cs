using System.Collections.Concurrent;
using System.Diagnostics;
using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// SIGKILL during a storm of concurrent writes, restart on the same data dir, then check what survived:
/// every acknowledged write, revisions never reused or going back, and no half-applied txn.
/// </summary>
public sealed class CrashSafetyTests(ITestOutputHelper output) : IDisposable
{
    private const int Writers = 16;
    private const int Cycles = 3;
    private const int TxnKeys = 3;
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10);

    private readonly ServerProcess _server = new();

    [Fact]
    public async Task Acknowledged_writes_survive_SIGKILL_mid_storm_three_times()
    {
        var acks = new ConcurrentBag<Ack>();
        var random = new Random(Environment.TickCount);
        await _server.StartAsync();
        var maxAckedBefore = 0L;

        for (var cycle = 0; cycle < Cycles; cycle++)
        {
            var killAt = random.Next(150, 450);
            var (acked, inFlightAtKill) = await StormThenKillAsync(cycle, killAt, acks);
            output.WriteLine($"cycle {cycle}: {acked} writes acknowledged, {inFlightAtKill} in flight at SIGKILL (target {killAt})");
            acked.Should().BeGreaterThan(0, "the storm must have been acknowledged before the kill\n{0}", _server.LogText());

            await _server.StartAsync("existing");
            var maxAcked = acks.Max(a => a.Revision);
            maxAcked.Should().BeGreaterThan(maxAckedBefore);
            maxAckedBefore = maxAcked;
            await VerifyAsync(acks.ToList(), maxAcked);
        }
    }

    private async Task<(int Acked, int InFlight)> StormThenKillAsync(int cycle, int killAt, ConcurrentBag<Ack> acks)
    {
        using var client = new EtcdClient(_server.ClientUrl);
        using var stop = new CancellationTokenSource();
        var killing = 0;
        var ackedThisCycle = 0;
        var inFlight = 0;
        var enoughAcks = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task Writer(int writer)
        {
            for (var i = 0; i < 5_000 && !stop.IsCancellationRequested; i++)
            {
                var isTxn = i % 3 == 0;
                var id = $"/crash/c{cycle}/w{writer:D2}/{(isTxn ? "x" : "k")}{i:D5}";
                var value = $"v-{cycle}-{writer}-{i}-{Guid.NewGuid():N}";
                string[] keys = isTxn ? [.. Enumerable.Range(0, TxnKeys).Select(j => $"{id}/{(char)('a' + j)}")] : [id];
                Interlocked.Increment(ref inFlight);
                try
                {
                    long revision;
                    if (isTxn)
                    {
                        var txn = new TxnRequest();
                        foreach (var key in keys)
                        {
                            txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) } });
                        }

                        var r = await client.TransactionAsync(txn, deadline: DateTime.UtcNow + CallTimeout, cancellationToken: stop.Token);
                        r.Succeeded.Should().BeTrue("a txn without compares takes the success branch");
                        revision = r.Header.Revision;
                    }
                    else
                    {
                        var r = await client.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8(id), Value = ByteString.CopyFromUtf8(value) }, deadline: DateTime.UtcNow + CallTimeout, cancellationToken: stop.Token);
                        revision = r.Header.Revision;
                    }

                    acks.Add(new Ack(keys, value, revision));
                    if (Interlocked.Increment(ref ackedThisCycle) >= killAt)
                    {
                        enoughAcks.TrySetResult();
                    }
                }
                catch (Exception) when (Volatile.Read(ref killing) == 1)
                {
                    return; // the server was killed under this call: not acknowledged, nothing to record
                }
                finally
                {
                    Interlocked.Decrement(ref inFlight);
                }
            }
        }

        var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(() => Writer(w))).ToArray();
        var firstDone = await Task.WhenAny(enoughAcks.Task, Task.WhenAll(writers), Task.Delay(TimeSpan.FromSeconds(60)));
        var failed = writers.FirstOrDefault(w => w.IsFaulted);
        if (failed is not null)
        {
            await failed; // surface a writer's unexpected error (not caused by the kill)
        }

        firstDone.Should().Be(enoughAcks.Task, "{0} writes should be acknowledged within 60 s (got {1})\n{2}", killAt, ackedThisCycle, _server.LogText());
        var inFlightAtKill = Volatile.Read(ref inFlight);
        Volatile.Write(ref killing, 1);
        _server.Kill();
        await stop.CancelAsync();
        await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(60));
        return (ackedThisCycle, inFlightAtKill);
    }

    private async Task VerifyAsync(IReadOnlyList<Ack> acks, long maxAcked)
    {
        using var client = new EtcdClient(_server.ClientUrl);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        var all = await client.GetAsync(new RangeRequest { Key = ByteString.CopyFromUtf8("/crash/"), RangeEnd = ByteString.CopyFromUtf8("/crash0") }, deadline: deadline);
        var byKey = all.Kvs.ToDictionary(kv => kv.Key.ToStringUtf8(), kv => (Value: kv.Value.ToStringUtf8(), kv.ModRevision));

        all.Header.Revision.Should().BeGreaterThanOrEqualTo(maxAcked, "the revision after restart must not go below an acknowledged one");

        var missing = new List<string>();
        foreach (var ack in acks)
        {
            foreach (var key in ack.Keys)
            {
                if (!byKey.TryGetValue(key, out var got))
                {
                    missing.Add($"{key} (acknowledged at revision {ack.Revision}) is missing");
                }
                else if (got.Value != ack.Value || got.ModRevision != ack.Revision)
                {
                    missing.Add($"{key}: acknowledged {ack.Value}@{ack.Revision}, found {got.Value}@{got.ModRevision}");
                }
            }
        }

        missing.Should().BeEmpty("every acknowledged write must survive SIGKILL ({0} acks checked)\n{1}", acks.Count, _server.LogText());

        // Writes that were in flight may or may not be there, but a txn is all or nothing, and one revision
        // belongs to exactly one write (no reuse across restarts).
        var writes = byKey.GroupBy(kv => WriteId(kv.Key)).ToList();
        foreach (var write in writes.Where(w => w.Key.Contains("/x", StringComparison.Ordinal)))
        {
            write.Should().HaveCount(TxnKeys, "txn {0} must be applied whole or not at all", write.Key);
            write.Select(kv => kv.Value.ModRevision).Distinct().Should().ContainSingle("txn {0} is one revision", write.Key);
            write.Select(kv => kv.Value.Value).Distinct().Should().ContainSingle();
        }

        var sharedRevisions = writes
            .GroupBy(w => w.First().Value.ModRevision)
            .Where(g => g.Count() > 1)
            .Select(g => $"revision {g.Key}: {string.Join(", ", g.Select(w => w.Key))}")
            .ToList();
        sharedRevisions.Should().BeEmpty("each revision belongs to one write transaction");

        var maxPresent = byKey.Count == 0 ? 0 : byKey.Values.Max(v => v.ModRevision);
        all.Header.Revision.Should().BeGreaterThanOrEqualTo(maxPresent);

        var after = await client.PutAsync("/crash/after-restart", Guid.NewGuid().ToString("N"), deadline: deadline);
        after.Header.Revision.Should().Be(all.Header.Revision + 1, "new writes continue from the recovered revision");
        after.Header.Revision.Should().BeGreaterThan(maxAcked);
    }

    private static string WriteId(string key)
    {
        var parts = key.Split('/');
        return parts.Length == 6 ? string.Join('/', parts[..5]) : key; // "/crash/cN/wNN/xIIIII/a" -> the txn
    }

    public void Dispose()
    {
        output.WriteLine($"--- server output (data {_server.DataDir}):");
        output.WriteLine(_server.LogText());
        _server.Dispose();
    }

    private sealed record Ack(string[] Keys, string Value, long Revision);
}
