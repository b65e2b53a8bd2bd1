using System.Collections.Concurrent;
using System.Diagnostics;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// The storage contract Kubernetes' API server relies on, exercised the way its etcd3 store does against a 3-member
/// cluster of real processes, with writers, watchers, the lease writer and the compactor spread over every member:
/// create-if-absent (txn on mod_revision == 0), optimistic update and delete (txn on the known mod_revision),
/// paginated lists at a pinned revision while writes go on, count-only on a prefix, watches from the list revision + 1
/// with prev_kv and progress notifications, periodic compaction, Event-like keys under short leases that expire,
/// and the leader SIGKILLed in the middle. Every watcher must see every event exactly once and in order (its
/// list + events replay to exactly the final state), no acknowledged write may be lost, a watch from a compacted
/// revision is cancelled with the compact revision, and every member ends with the same HashKV.
/// </summary>
[Collection(ClusterTestGroup.Name)]
public sealed class KubernetesStorageContractTests(ITestOutputHelper output)
{
    private const string Registry = "/registry/";
    private const string Pods = "/registry/pods/";
    private const string Events = "/registry/events/";
    private const int KeysPerWriter = 20;
    private const int PageSize = 7;
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task The_kubernetes_storage_patterns_hold_on_every_member_through_a_leader_kill()
    {
        var total = Stopwatch.StartNew();
        await using var c = await TestCluster.StartAsync(output, 3, ["--watch-progress-notify-interval=1s"]);
        var members = c.Members;
        var leader = await c.WaitLeaderAsync(members, TimeSpan.FromSeconds(30));

        using var stop = new CancellationTokenSource();
        var acks = new ConcurrentBag<Ack>();
        var writers = Enumerable.Range(0, 3).Select(i => Task.Run(() => WriteObjectsAsync(members, i, acks, stop.Token))).ToList();
        var leased = new ConcurrentBag<string>();
        var eventWriter = Task.Run(() => WriteLeasedEventsAsync(members, leased, stop.Token));

        // Each watcher lists (paginated, pinned at the first page's revision) while the writers go on, then watches
        // from the list revision + 1, each through a different member.
        var started = Stopwatch.StartNew();
        while (acks.Count < 30)
        {
            started.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(30), "the writers must get going");
            await Task.Delay(50);
        }

        var watchers = members.Select((m, i) => new ContractWatcher(members, i, output)).ToList();
        using var disposeWatchers = new Disposer(watchers);
        foreach (var w in watchers)
        {
            await w.ListAsync();
        }

        var watching = watchers.Select(w => Task.Run(w.WatchAsync)).ToList();
        using var compactorStop = new CancellationTokenSource();
        var compactions = new ConcurrentBag<long>();
        var compactor = Task.Run(() => CompactAsync(members, watchers, compactions, compactorStop.Token));

        // Writes go on for a while, then the leader dies in the middle of them; later it comes back.
        await Task.Delay(TimeSpan.FromSeconds(6));
        output.WriteLine($"killing the leader {leader.Name} after {acks.Count} acknowledged writes");
        leader.Kill();
        var survivors = members.Where(m => m != leader).ToList();
        var newLeader = await c.WaitLeaderAsync(survivors, TimeSpan.FromSeconds(30));
        output.WriteLine($"new leader {newLeader.Name}");
        await Task.Delay(TimeSpan.FromSeconds(4));
        await c.RestartAsync(leader);
        output.WriteLine($"{leader.Name} restarted after {acks.Count} acknowledged writes");
        await Task.Delay(TimeSpan.FromSeconds(4));

        await stop.CancelAsync();
        await Task.WhenAll([.. writers, eventWriter]);
        var writerErrors = (await Task.WhenAll(writers)).Sum();
        output.WriteLine($"{acks.Count} acknowledged object writes, {writerErrors} calls with an unknown outcome, {leased.Count} leased keys");
        acks.Count.Should().BeGreaterThan(50, "the writers must have made progress through the whole run");
        leased.Count.Should().BeGreaterThan(5);

        // Leased keys expire on their own (TTL 2 s; a leader change extends that by an election timeout at most).
        var kv = new KV.KVClient(newLeader.Channel);
        var expiry = Stopwatch.StartNew();
        while ((await kv.RangeAsync(CountOnly(Events), deadline: Deadline())).Count > 0)
        {
            expiry.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(30), "every leased key must expire");
            await Task.Delay(200);
        }

        await compactorStop.CancelAsync();
        await compactor;
        compactions.Should().NotBeEmpty("the compactor runs every 2 s");

        // Nothing changes any more: every watcher must reach the final revision (progress notifications carry it) and
        // its list + events must replay to exactly the final state.
        var final = await kv.RangeAsync(new RangeRequest { Key = Utf8(Registry), RangeEnd = Utf8(TestCluster.PrefixEnd(Registry)) }, deadline: Deadline());
        var finalRevision = final.Header.Revision;
        var finalState = final.Kvs.ToDictionary(k => k.Key.ToStringUtf8(), k => k.ModRevision);
        finalState.Keys.Should().NotContain(k => k.StartsWith(Events, StringComparison.Ordinal));
        foreach (var w in watchers)
        {
            await w.WaitForRevisionAsync(finalRevision, TimeSpan.FromSeconds(30));
        }

        // Idle now: each watcher gets a progress notification (1 s interval) carrying the final revision.
        foreach (var w in watchers)
        {
            await w.WaitForProgressAsync(finalRevision, TimeSpan.FromSeconds(15));
        }

        watchers.ForEach(w => w.Stop());
        await Task.WhenAll(watching);
        foreach (var w in watchers)
        {
            output.WriteLine(w.Summary);
            w.Violations.Should().BeEmpty("watcher {0} must see every event once, in order, with the right prev_kv", w.Name);
            w.State.Should().BeEquivalentTo(finalState, "watcher {0}'s list + events must replay to the final state", w.Name);
            w.DeletesOfLeasedKeys.Should().BeGreaterThan(0, "watcher {0} must see leased keys expire", w.Name);

            // No acknowledged write is lost: each one after the watcher's list revision is among its events.
            foreach (var ack in acks.Where(a => a.Revision > w.ListRevision))
            {
                w.Seen.Should().Contain((ack.Revision, ack.Key, ack.IsDelete), "watcher {0} must see the acknowledged write {1}", w.Name, ack);
            }
        }

        // A watch from a compacted revision is cancelled with the compact revision, on every member.
        var compactTo = finalRevision;
        await kv.CompactAsync(new CompactionRequest { Revision = compactTo }, deadline: Deadline());
        foreach (var m in members)
        {
            // A linearizable read first: the member has applied the compaction by then.
            await new KV.KVClient(m.Channel).RangeAsync(new RangeRequest { Key = Utf8(Pods) }, deadline: Deadline());
            using var watch = new Etcdserverpb.Watch.WatchClient(m.Channel).Watch(deadline: Deadline());
            await watch.RequestStream.WriteAsync(new WatchRequest
            {
                CreateRequest = new WatchCreateRequest { Key = Utf8(Registry), RangeEnd = Utf8(TestCluster.PrefixEnd(Registry)), StartRevision = compactTo - 1 },
            });
            WatchResponse r;
            do
            {
                using var cts = new CancellationTokenSource(CallTimeout);
                (await watch.ResponseStream.MoveNext(cts.Token)).Should().BeTrue();
                r = watch.ResponseStream.Current;
            }
            while (!r.Canceled);
            (r.CompactRevision, r.Events.Count).Should().Be((compactTo, 0), "a watch from {0} through {1} is below the compaction at {2}", compactTo - 1, m.Name, compactTo);
        }

        var hash = await c.WaitConvergedAsync(members, finalRevision, TimeSpan.FromSeconds(30));
        output.WriteLine($"every member at revision {hash.Revision} with hash {hash.Hash}; whole test {total.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>
    /// One writer per member, owning its own keys: create-if-absent when it believes a key absent, else an optimistic
    /// update or delete on the mod_revision it knows. A failed compare is only legitimate after a call whose outcome
    /// was unknown (an error); the failure branch reads the key back, as the API server does. On an error the writer
    /// moves to the next member. Returns the number of calls with an unknown outcome.
    /// </summary>
    private static async Task<int> WriteObjectsAsync(IReadOnlyList<ClusterMember> members, int index, ConcurrentBag<Ack> acks, CancellationToken stop)
    {
        var random = new Random(index);
        var known = new Dictionary<string, long>();
        var uncertain = new HashSet<string>();
        var via = index;
        var errors = 0;
        for (var n = 0; !stop.IsCancellationRequested; n++)
        {
            var key = $"{Pods}w{index}-{random.Next(KeysPerWriter):D2}";
            var modRevision = known.GetValueOrDefault(key);
            var delete = modRevision != 0 && random.Next(4) == 0;
            var txn = new TxnRequest();
            txn.Compare.Add(new Compare { Key = Utf8(key), Target = Compare.Types.CompareTarget.Mod, Result = Compare.Types.CompareResult.Equal, ModRevision = modRevision });
            txn.Success.Add(delete
                ? new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = Utf8(key) } }
                : new RequestOp { RequestPut = new PutRequest { Key = Utf8(key), Value = Utf8($"{index}/{n}") } });
            txn.Failure.Add(new RequestOp { RequestRange = new RangeRequest { Key = Utf8(key) } });
            var m = members[via % members.Count];
            if (!m.IsRunning)
            {
                via++;
                continue;
            }

            TxnResponse r;
            try
            {
                r = await new KV.KVClient(m.Channel).TxnAsync(txn, deadline: Deadline(), cancellationToken: CancellationToken.None);
            }
            catch (RpcException)
            {
                errors++;
                uncertain.Add(key);
                via++;
                continue;
            }

            if (r.Succeeded)
            {
                acks.Add(new Ack(key, r.Header.Revision, delete));
                known[key] = delete ? 0 : r.Header.Revision;
            }
            else
            {
                uncertain.Should().Contain(key, "a compare on {0} may only fail after a call whose outcome was unknown", key);
                var kvs = r.Responses[0].ResponseRange.Kvs;
                known[key] = kvs.Count > 0 ? kvs[0].ModRevision : 0;
            }

            uncertain.Remove(key);
        }

        return errors;
    }

    /// <summary>Event-like objects: each under its own 2 s lease, created if absent, through the members in turn.</summary>
    private static async Task WriteLeasedEventsAsync(IReadOnlyList<ClusterMember> members, ConcurrentBag<string> leased, CancellationToken stop)
    {
        for (var n = 0; !stop.IsCancellationRequested; n++)
        {
            var m = members[n % members.Count];
            if (!m.IsRunning)
            {
                continue;
            }

            var key = $"{Events}e{n:D4}";
            try
            {
                var grant = await new Etcdserverpb.Lease.LeaseClient(m.Channel).LeaseGrantAsync(new LeaseGrantRequest { TTL = 2 }, deadline: Deadline(), cancellationToken: CancellationToken.None);
                var txn = new TxnRequest();
                txn.Compare.Add(new Compare { Key = Utf8(key), Target = Compare.Types.CompareTarget.Mod, Result = Compare.Types.CompareResult.Equal, ModRevision = 0 });
                txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = Utf8(key), Value = Utf8("event"), Lease = grant.ID } });
                var r = await new KV.KVClient(m.Channel).TxnAsync(txn, deadline: Deadline(), cancellationToken: CancellationToken.None);
                r.Succeeded.Should().BeTrue("{0} is a new key", key);
                leased.Add(key);
            }
            catch (RpcException)
            {
                // Unknown outcome during the leader change; the key expires anyway if it was written.
            }

            await Task.Delay(250, CancellationToken.None);
        }
    }

    /// <summary>
    /// Compacts every 2 s, through the members in turn, to the revision it saw on the previous round (as the API
    /// server's compactor), but never beyond what every watcher has reached, so a watcher reconnecting after the
    /// leader kill resumes from history instead of relisting.
    /// </summary>
    private static async Task CompactAsync(IReadOnlyList<ClusterMember> members, IReadOnlyList<ContractWatcher> watchers, ConcurrentBag<long> done, CancellationToken stop)
    {
        long previous = 0;
        for (var n = 0; !stop.IsCancellationRequested; n++)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(2), stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            var m = members[n % members.Count];
            if (!m.IsRunning)
            {
                continue;
            }

            try
            {
                var kv = new KV.KVClient(m.Channel);
                var target = Math.Min(previous, watchers.Min(w => w.Revision));
                if (target > done.DefaultIfEmpty(1).Max())
                {
                    await kv.CompactAsync(new CompactionRequest { Revision = target }, deadline: Deadline(), cancellationToken: CancellationToken.None);
                    done.Add(target);
                }

                previous = (await kv.RangeAsync(CountOnly(Pods), deadline: Deadline(), cancellationToken: CancellationToken.None)).Header.Revision;
            }
            catch (RpcException)
            {
                // The member lost its leader for a moment; next round.
            }
        }
    }

    private static RangeRequest CountOnly(string prefix) =>
        new() { Key = Utf8(prefix), RangeEnd = Utf8(TestCluster.PrefixEnd(prefix)), CountOnly = true };

    private static ByteString Utf8(string s) => ByteString.CopyFromUtf8(s);

    private static DateTime Deadline() => DateTime.UtcNow + CallTimeout;

    private sealed record Ack(string Key, long Revision, bool IsDelete);

    private sealed class Disposer(IEnumerable<IDisposable> items) : IDisposable
    {
        public void Dispose()
        {
            foreach (var item in items)
            {
                item.Dispose();
            }
        }
    }

    /// <summary>
    /// A reflector: paginated list, then a watch from the list revision + 1 with prev_kv and progress notifications,
    /// resumed on another member from the last revision it reached when its stream breaks. Checks every event against
    /// the state it built: revisions only go up, a create has no prev_kv, an update or delete carries as prev_kv
    /// exactly the version it holds.
    /// </summary>
    private sealed class ContractWatcher(IReadOnlyList<ClusterMember> members, int index, ITestOutputHelper output) : IDisposable
    {
        private readonly object _lock = new();
        private readonly CancellationTokenSource _stop = new();
        private long _revision;
        private long _lastProgress;
        private int _reconnects;

        public string Name => $"w{index}";

        public long ListRevision { get; private set; }

        /// <summary>Key → mod_revision as this watcher believes it (list + events).</summary>
        public Dictionary<string, long> State { get; } = [];

        public HashSet<(long Revision, string Key, bool IsDelete)> Seen { get; } = [];

        public List<string> Violations { get; } = [];

        public int ProgressNotifications { get; private set; }

        public long LastProgressRevision
        {
            get
            {
                lock (_lock)
                {
                    return _lastProgress;
                }
            }
        }

        public int DeletesOfLeasedKeys { get; private set; }

        /// <summary>Every event up to this revision has been received.</summary>
        public long Revision
        {
            get
            {
                lock (_lock)
                {
                    return _revision;
                }
            }
        }

        public string Summary => $"{Name}: listed {ListRevision}, reached {Revision}, {Seen.Count} events, {ProgressNotifications} progress notifications, {_reconnects} reconnects";

        public void Stop() => _stop.Cancel();

        public void Dispose() => _stop.Dispose();

        /// <summary>Pages of <see cref="PageSize"/> keys at the first page's revision, continuing from the last key + "\0".</summary>
        public async Task ListAsync()
        {
            var m = members[index];
            var kv = new KV.KVClient(m.Channel);
            var end = Utf8(TestCluster.PrefixEnd(Registry));
            var request = new RangeRequest { Key = Utf8(Registry), RangeEnd = end, Limit = PageSize };
            var pages = 0;
            long firstCount = -1;
            while (true)
            {
                var page = await kv.RangeAsync(request, deadline: Deadline());
                pages++;
                if (ListRevision == 0)
                {
                    ListRevision = page.Header.Revision;
                    firstCount = page.Count;
                    request.Revision = ListRevision;
                }

                // Later pages are read at the pinned revision (their header carries the current one, as etcd's); each
                // counts what is left of the range at that revision.
                page.Count.Should().Be(firstCount - State.Count, "a page counts the rest of the range at revision {0}", ListRevision);
                foreach (var k in page.Kvs)
                {
                    k.ModRevision.Should().BeLessThanOrEqualTo(ListRevision);
                    State[k.Key.ToStringUtf8()] = k.ModRevision;
                }

                if (!page.More)
                {
                    break;
                }

                request.Key = ByteString.CopyFrom([.. page.Kvs[^1].Key.Span, 0]);
            }

            State.Count.Should().Be((int)firstCount, "the first page's count is the size of the whole list at {0}", ListRevision);
            var pods = await kv.RangeAsync(new RangeRequest { Key = Utf8(Pods), RangeEnd = Utf8(TestCluster.PrefixEnd(Pods)), CountOnly = true, Revision = ListRevision }, deadline: Deadline());
            pods.Kvs.Should().BeEmpty("count-only returns no keys");
            pods.Count.Should().Be(State.Keys.Count(k => k.StartsWith(Pods, StringComparison.Ordinal)), "count-only on the pods prefix at {0}", ListRevision);
            _revision = ListRevision;
            output.WriteLine($"{Name} listed {State.Count} keys in {pages} pages at revision {ListRevision} through {m.Name}");
        }

        public async Task WatchAsync()
        {
            var via = index;
            while (!_stop.IsCancellationRequested)
            {
                var m = members[via % members.Count];
                if (!m.IsRunning)
                {
                    via++;
                    continue;
                }

                try
                {
                    await WatchThroughAsync(m);
                }
                catch (RpcException) when (!_stop.IsCancellationRequested)
                {
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                {
                    return;
                }
                catch (RpcException) when (_stop.IsCancellationRequested)
                {
                    return;
                }

                _reconnects++;
                via++;
                await Task.Delay(100, CancellationToken.None);
            }
        }

        public async Task WaitForRevisionAsync(long revision, TimeSpan timeout)
        {
            var sw = Stopwatch.StartNew();
            while (Revision < revision)
            {
                sw.Elapsed.Should().BeLessThan(timeout, "{0} must reach revision {1} (now {2})", Name, revision, Revision);
                await Task.Delay(100);
            }
        }

        public async Task WaitForProgressAsync(long revision, TimeSpan timeout)
        {
            var sw = Stopwatch.StartNew();
            while (LastProgressRevision < revision)
            {
                sw.Elapsed.Should().BeLessThan(timeout, "{0} asked for progress notifications every 1 s; the last carried {1}, not {2}", Name, LastProgressRevision, revision);
                await Task.Delay(100);
            }
        }

        private async Task WatchThroughAsync(ClusterMember m)
        {
            using var watch = new Etcdserverpb.Watch.WatchClient(m.Channel).Watch(cancellationToken: _stop.Token);
            await watch.RequestStream.WriteAsync(new WatchRequest
            {
                CreateRequest = new WatchCreateRequest
                {
                    Key = Utf8(Registry),
                    RangeEnd = Utf8(TestCluster.PrefixEnd(Registry)),
                    StartRevision = Revision + 1,
                    PrevKv = true,
                    ProgressNotify = true,
                },
            });
            while (await watch.ResponseStream.MoveNext(_stop.Token))
            {
                var r = watch.ResponseStream.Current;
                if (r.Canceled)
                {
                    lock (_lock)
                    {
                        Violations.Add($"watch through {m.Name} from {_revision + 1} cancelled: compact {r.CompactRevision} '{r.CancelReason}'");
                    }

                    throw new RpcException(new Status(StatusCode.Aborted, "cancelled"));
                }

                if (r.Created)
                {
                    continue;
                }

                lock (_lock)
                {
                    if (r.Events.Count == 0)
                    {
                        // A progress notification: every event up to the header's revision has been sent.
                        ProgressNotifications++;
                        _lastProgress = r.Header.Revision;
                        _revision = Math.Max(_revision, r.Header.Revision);
                        continue;
                    }

                    foreach (var e in r.Events)
                    {
                        Apply(e, m);
                    }
                }
            }
        }

        private void Apply(Mvccpb.Event e, ClusterMember m)
        {
            var key = e.Kv.Key.ToStringUtf8();
            var rev = e.Kv.ModRevision;
            var isDelete = e.Type == Mvccpb.Event.Types.EventType.Delete;
            if (rev <= _revision)
            {
                Violations.Add($"{key}@{rev} through {m.Name} after revision {_revision} (duplicate or out of order)");
                return;
            }

            if (!Seen.Add((rev, key, isDelete)))
            {
                Violations.Add($"{key}@{rev} twice");
            }

            var held = State.TryGetValue(key, out var heldRevision);
            if (isDelete || held)
            {
                if (!held)
                {
                    Violations.Add($"delete of {key}@{rev} that this watcher does not hold");
                }
                else if (e.PrevKv is null || e.PrevKv.ModRevision != heldRevision)
                {
                    Violations.Add($"{key}@{rev}: prev_kv {e.PrevKv?.ModRevision.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "missing"}, held {heldRevision} (an event was lost)");
                }
            }
            else if (e.PrevKv is not null || e.Kv.CreateRevision != rev)
            {
                Violations.Add($"{key}@{rev} is a create of a key this watcher does not hold, yet create revision {e.Kv.CreateRevision} / prev_kv {e.PrevKv is not null}");
            }

            if (isDelete)
            {
                State.Remove(key);
                if (key.StartsWith(Events, StringComparison.Ordinal))
                {
                    DeletesOfLeasedKeys++;
                }
            }
            else
            {
                State[key] = rev;
            }

            // Every event of a revision comes in one response, so the revision is complete once an event of it is seen
            // (each revision here changes a single key: one txn, or one lease with one key).
            _revision = rev;
        }
    }
}
