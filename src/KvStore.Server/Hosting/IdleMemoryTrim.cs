using System.Diagnostics;
using KvStore.Server.Replication;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Hosting;

/// <summary>
/// Gives memory back once a burst of work has ended. While a member takes writes, the collector keeps the memory it
/// had at the peak committed (free regions it expects to allocate into again, the raft log's payload segments a
/// snapshot released), and the workstation collector returns it only a little at each later collection, so an idle
/// member stays at its peak. Once a second this looks at what the process allocated: when at least
/// <see cref="TrimAfterBytes"/> were allocated since the last trim and the last <see cref="IdleTicks"/> seconds
/// allocated less than <see cref="IdleBytesPerTick"/> each, it runs one full blocking collection in the aggressive
/// mode, which compacts the heap (large objects too) and decommits every free region. It never runs under load, and
/// not again until the next burst. The collection pauses the process (hundreds of milliseconds for a heap of several
/// hundred MB), so a member that leads other voters does not trim: a leader silent for an election timeout loses its
/// leadership. A follower's pause costs nothing of the kind (its ticks are coalesced, so it does not campaign after it).
/// </summary>
public sealed partial class IdleMemoryTrim(RaftHost node, ILoggerFactory loggers) : BackgroundService
{
    /// <summary>Allocations since the last trim that make the next idle spell worth a trim.</summary>
    public const long TrimAfterBytes = 256L << 20;

    /// <summary>What a second may allocate and still count as idle (raft ticks, heartbeats, metrics scrapes).</summary>
    public const long IdleBytesPerTick = 1L << 20;

    /// <summary>Consecutive idle seconds before a trim.</summary>
    public const int IdleTicks = 2;

    /// <summary>Committed memory outside the heap's generations that makes a trim worth its pause.</summary>
    public const long WorthReturningBytes = 64L << 20;

    private readonly ILogger _logger = loggers.CreateLogger("kvstore.memory");

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        var last = GC.GetTotalAllocatedBytes();
        var trimmedAt = 0L;
        var idle = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                var now = GC.GetTotalAllocatedBytes();
                idle = now - last < IdleBytesPerTick ? idle + 1 : 0;
                last = now;
                if (idle < IdleTicks || now - trimmedAt < TrimAfterBytes || (node.IsLeader && node.Membership.VoterCount > 1))
                {
                    continue;
                }

                // As of the last collection: nothing to give back (the heap grew into what it committed) means no pause, and
                // no retry until the next burst.
                var sinceLastCollection = GC.GetGCMemoryInfo();
                var committedBefore = sinceLastCollection.TotalCommittedBytes;
                if (committedBefore - sinceLastCollection.HeapSizeBytes < WorthReturningBytes)
                {
                    trimmedAt = now;
                    idle = 0;
                    continue;
                }

                var before = Environment.WorkingSet;
                var started = Stopwatch.GetTimestamp();
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                var took = Stopwatch.GetElapsedTime(started);
                var info = GC.GetGCMemoryInfo();
                Trimmed(_logger, (now - trimmedAt) >> 20, committedBefore >> 20, info.TotalCommittedBytes >> 20, info.HeapSizeBytes >> 20, before >> 20, Environment.WorkingSet >> 20, took.TotalMilliseconds);
                trimmedAt = last = GC.GetTotalAllocatedBytes();
                idle = 0;
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown.
        }
    }

    [LoggerMessage(EventId = 1008, Level = LogLevel.Information, Message = "idle after {AllocatedMiB} MiB allocated: compacted the heap and returned free memory; GC committed {CommittedBeforeMiB} -> {CommittedAfterMiB} MiB (heap {HeapMiB} MiB), working set {RssBeforeMiB} -> {RssAfterMiB} MiB, {PauseMs:F0} ms")]
    private static partial void Trimmed(ILogger logger, long allocatedMiB, long committedBeforeMiB, long committedAfterMiB, long heapMiB, long rssBeforeMiB, long rssAfterMiB, double pauseMs);
}
