using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.EndToEnd.Cluster;
using Mvccpb;

namespace KvStore.EndToEnd.Faults;

/// <summary>One event as a watch delivered it.</summary>
public sealed record WatchedEvent(long Revision, string Key, bool IsDelete, string? Value)
{
    public override string ToString() => $"rev {Revision} {(IsDelete ? "DELETE" : "PUT")} {Key}{(IsDelete ? string.Empty : "=" + Value)}";
}

/// <summary>
/// A watch on the workload's prefix through one member from revision 1, kept open through faults the way a client
/// library does it: when the stream breaks (member killed, restarted), it watches again from the revision after the
/// last one it received. Records every response's events and every property violation it sees as they arrive.
/// </summary>
public sealed class WatchRecorder
{
    private readonly ClusterMember _member;
    private readonly WorkloadChannels _channels;
    private readonly object _lock = new();
    private readonly List<WatchedEvent> _events = [];
    private readonly List<string> _violations = [];
    private TaskCompletionSource _progress = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastRevision = 1; // revision 1 is the empty store: the first write is revision 2

    public WatchRecorder(ClusterMember member, WorkloadChannels channels)
    {
        _member = member;
        _channels = channels;
    }

    public string MemberName => _member.Name;

    public int Reconnects { get; private set; }

    public long LastRevision
    {
        get
        {
            lock (_lock)
            {
                return _lastRevision;
            }
        }
    }

    public IReadOnlyList<WatchedEvent> Events()
    {
        lock (_lock)
        {
            return [.. _events];
        }
    }

    public IReadOnlyList<string> Violations()
    {
        lock (_lock)
        {
            return [.. _violations];
        }
    }

    /// <summary>Waits until the watch has delivered revision <paramref name="revision"/>; false after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForRevisionAsync(long revision, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            Task progress;
            lock (_lock)
            {
                if (_lastRevision >= revision)
                {
                    return true;
                }

                progress = _progress.Task;
            }

            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                return false;
            }

            try
            {
                await progress.WaitAsync(left);
            }
            catch (TimeoutException)
            {
                return false;
            }
        }
    }

    /// <summary>Watches until <paramref name="stop"/> fires; each (re)connection attempt is paced and the whole loop ends with the token.</summary>
    public async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await WatchOnceAsync(stop);
            }
            catch (RpcException) when (!stop.IsCancellationRequested)
            {
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RpcException) when (stop.IsCancellationRequested)
            {
                return;
            }

            Reconnects++;
            try
            {
                await Task.Delay(200, stop); // pacing between reconnects to a member that may be down
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task WatchOnceAsync(CancellationToken stop)
    {
        using var call = new Watch.WatchClient(_channels.For(_member)).Watch(cancellationToken: stop);
        var start = Events().Count == 0 ? 1 : LastRevision + 1;
        await call.RequestStream.WriteAsync(new WatchRequest
        {
            CreateRequest = new WatchCreateRequest
            {
                Key = ByteString.CopyFromUtf8(KvWorkload.Prefix),
                RangeEnd = ByteString.CopyFromUtf8(TestCluster.PrefixEnd(KvWorkload.Prefix)),
                StartRevision = start,
            },
        }, stop);
        await foreach (var r in call.ResponseStream.ReadAllAsync(stop))
        {
            if (r.Canceled)
            {
                Violation($"watch from {start} canceled by the server: {r.CancelReason} (compact revision {r.CompactRevision})");
                return;
            }

            if (r.Events.Count > 0)
            {
                Record(r.Events);
            }
        }
    }

    private void Record(IEnumerable<Event> events)
    {
        lock (_lock)
        {
            var batch = events.Select(e => new WatchedEvent(e.Kv.ModRevision, e.Kv.Key.ToStringUtf8(), e.Type == Event.Types.EventType.Delete, e.Type == Event.Types.EventType.Delete ? null : e.Kv.Value.ToStringUtf8())).ToList();
            for (var j = 0; j < batch.Count; j++)
            {
                // Every write of the run is under the prefix and every revision after 1 is one of them: revisions
                // arrive in order, each once (all events of a revision together, in one response), without gaps.
                var e = batch[j];
                var previous = j == 0 ? _lastRevision : batch[j - 1].Revision;
                var sameTransaction = j > 0 && batch[j - 1].Revision == e.Revision;
                if (e.Revision < previous || (e.Revision == previous && !sameTransaction))
                {
                    Violation($"{e} after revision {previous}: out of order or seen twice");
                }
                else if (e.Revision > previous + 1)
                {
                    Violation($"{e} after revision {previous}: revisions {previous + 1}..{e.Revision - 1} never arrived");
                }

                _events.Add(e);
                _lastRevision = Math.Max(_lastRevision, e.Revision);
            }

            var progressed = _progress;
            _progress = new(TaskCreationOptions.RunContinuationsAsynchronously);
            progressed.SetResult();
        }
    }

    private void Violation(string what)
    {
        lock (_lock)
        {
            _violations.Add($"watch via {_member.Name}: {what}");
        }
    }
}
