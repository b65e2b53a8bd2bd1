namespace KvStore.Server.Watch;

/// <summary>Watch settings. Defaults are etcd's.</summary>
public sealed class WatchOptions
{
    /// <summary>
    /// Event responses a stream may have queued but not yet written to the client. When a synced watcher's stream is
    /// this far behind, the watcher drops to the unsynced group and is caught up from the store later (etcd: 128).
    /// </summary>
    public int StreamBufferSize { get; set; } = 128;

    /// <summary>
    /// Bytes (keys and values, plus a fixed overhead per event) of event responses a stream may have queued but not yet
    /// written. A response is queued only while the stream holds less than this, so a stream that stops reading holds
    /// at most this much plus one response; its watchers drop to the unsynced group and are caught up from the store
    /// once it reads again. Catch-up reads are cut (at whole revisions) to this size too.
    /// </summary>
    public long StreamBufferBytes { get; set; } = 8 * 1024 * 1024;

    /// <summary>How often watchers with progress_notify get an empty response when idle (etcd: 10 minutes).</summary>
    public TimeSpan ProgressNotifyInterval { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the background loop catches unsynced watchers up from the store (etcd: 100 ms).</summary>
    public TimeSpan SyncInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Unsynced watchers handled per catch-up pass (etcd: 512).</summary>
    public int MaxWatchersPerSync { get; set; } = 512;

    /// <summary>History events read per watcher per catch-up pass.</summary>
    public int MaxEventsPerSync { get; set; } = 10_000;

    /// <summary>
    /// Responses of fragmenting watchers are split when at least this large (etcd: --max-request-bytes plus its
    /// 512 KiB gRPC overhead allowance; 2 MiB by default).
    /// </summary>
    public long MaxResponseBytes { get; set; } = 2_097_152;

    /// <summary>A stream requiring a leader is cancelled after this long without one (etcd: 3 election timeouts).</summary>
    public TimeSpan NoLeaderCancelAfter { get; set; } = TimeSpan.FromSeconds(3);
}
