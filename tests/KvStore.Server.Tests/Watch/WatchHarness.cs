using Etcdserverpb;
using Google.Protobuf;
using KvStore.Server.Tests.Lease;
using KvStore.Server.Watch;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Watch;

/// <summary>A hub over an in-memory store, with clients whose responses are collected by draining their queues.</summary>
public sealed class WatchHarness : IDisposable
{
    public WatchHarness(int bufferSize = 128, long maxResponseBytes = 1_572_864)
    {
        Options = new WatchOptions { StreamBufferSize = bufferSize, MaxResponseBytes = maxResponseBytes };
        Hub = new WatchHub(Store, Options, Time, NullLogger<WatchHub>.Instance);
    }

    public FakeWatchableStore Store { get; } = new();

    public ManualTimeProvider Time { get; } = new();

    public WatchOptions Options { get; }

    public WatchHub Hub { get; }

    public WatchClient Open() => new(Hub.OpenSession());

    public void Commit(params (string Key, string? Value)[] changes) => Store.Commit(Hub, changes);

    public void Dispose() => Hub.Dispose();

    public static WatchCreateRequest Create(
        string key, string? rangeEnd = null, long startRevision = 0, bool prevKv = false, bool progressNotify = false, long watchId = 0,
        params WatchCreateRequest.Types.FilterType[] filters)
    {
        var request = new WatchCreateRequest
        {
            Key = ByteString.CopyFromUtf8(key),
            StartRevision = startRevision,
            PrevKv = prevKv,
            ProgressNotify = progressNotify,
            WatchId = watchId,
        };
        if (rangeEnd is not null)
        {
            request.RangeEnd = ByteString.CopyFromUtf8(rangeEnd);
        }

        request.Filters.AddRange(filters);
        return request;
    }
}

/// <summary>One client stream; <see cref="DrainAsync"/> plays the send loop once and returns what was written.</summary>
public sealed class WatchClient(WatchSession session) : IDisposable
{
    public WatchSession Session { get; } = session;

    public List<WatchResponse> All { get; } = [];

    public async Task<List<WatchResponse>> DrainAsync()
    {
        var written = new List<WatchResponse>();
        await Session.DrainAsync(
            r =>
            {
                written.Add(r);
                return Task.CompletedTask;
            },
            revision => new ResponseHeader { Revision = revision });
        All.AddRange(written);
        return written;
    }

    public void Dispose() => Session.Dispose();
}

internal static class WatchResponseExtensions
{
    /// <summary>"PUT k=v@rev" / "DELETE k@rev" lines for readable assertions.</summary>
    public static IEnumerable<string> Describe(this IEnumerable<WatchResponse> responses) =>
        responses.SelectMany(r => r.Events).Select(e => e.Type == Mvccpb.Event.Types.EventType.Put
            ? $"PUT {e.Kv.Key.ToStringUtf8()}={e.Kv.Value.ToStringUtf8()}@{e.Kv.ModRevision}"
            : $"DELETE {e.Kv.Key.ToStringUtf8()}@{e.Kv.ModRevision}");
}
