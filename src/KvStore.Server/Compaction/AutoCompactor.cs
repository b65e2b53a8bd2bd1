using Etcdserverpb;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Lease;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Compaction;

/// <summary>
/// --auto-compaction-*: on the leader only, proposes Compaction entries through the log (so every member compacts at
/// the same revision at the same log index), following <see cref="PeriodicCompactionSchedule"/> or
/// <see cref="RevisionCompactionSchedule"/>, and logs like etcd's compactor.
/// </summary>
public sealed partial class AutoCompactor(
    AutoCompactionPolicy policy, MvccStore store, IProposer proposer, ILeaderStatus leader, TimeProvider time, ILogger<AutoCompactor> logger)
    : BackgroundService
{
    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        Log.Enabled(logger, policy.ToString());
        try
        {
            if (policy.Mode == AutoCompactionMode.Periodic)
            {
                await RunPeriodicAsync(stoppingToken);
            }
            else
            {
                await RunRevisionAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown.
        }
    }

    private async Task RunPeriodicAsync(CancellationToken stoppingToken)
    {
        var schedule = new PeriodicCompactionSchedule(policy.Period, time.GetUtcNow(), store.CurrentRevision);
        using var timer = new PeriodicTimer(schedule.RetryInterval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            if (schedule.Tick(time.GetUtcNow(), store.CurrentRevision, leader.IsLeader) is not { } revision)
            {
                continue;
            }

            Log.StartingPeriodic(logger, revision, AutoCompactionPolicy.GoDuration(schedule.Period));
            if (await CompactAsync(revision, stoppingToken))
            {
                schedule.Succeeded(time.GetUtcNow());
                Log.CompletedPeriodic(logger, revision, AutoCompactionPolicy.GoDuration(schedule.Period));
            }
            else
            {
                Log.FailedPeriodic(logger, revision, AutoCompactionPolicy.GoDuration(schedule.RetryInterval));
            }
        }
    }

    private async Task RunRevisionAsync(CancellationToken stoppingToken)
    {
        var schedule = new RevisionCompactionSchedule(policy.Revisions);
        using var timer = new PeriodicTimer(RevisionCompactionSchedule.CheckInterval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            if (schedule.Tick(store.CurrentRevision, leader.IsLeader) is not { } revision)
            {
                continue;
            }

            Log.StartingRevision(logger, revision, policy.Revisions);
            if (await CompactAsync(revision, stoppingToken))
            {
                schedule.Succeeded(revision);
                Log.CompletedRevision(logger, revision, policy.Revisions);
            }
            else
            {
                Log.FailedRevision(logger, revision, AutoCompactionPolicy.GoDuration(RevisionCompactionSchedule.CheckInterval));
            }
        }
    }

    /// <summary>Proposes the compaction; true when it was applied or the store was compacted there already.</summary>
    private async Task<bool> CompactAsync(long revision, CancellationToken cancellationToken)
    {
        try
        {
            await proposer.ProposeAsync(new InternalRequest { Compaction = new CompactionRequest { Revision = revision } }, cancellationToken);
            return true;
        }
        catch (RpcException e) when (e.Status.Detail == EtcdErrors.Compacted.Message)
        {
            return true;
        }
        catch (RpcException e)
        {
            Log.ProposalFailed(logger, revision, e.Status.Detail);
            return false;
        }
    }

    /// <summary>Event IDs 1720-1729.</summary>
    private static partial class Log
    {
        [LoggerMessage(EventId = 1720, Level = LogLevel.Information, Message = "auto-compaction enabled: {Policy}")]
        public static partial void Enabled(ILogger logger, string policy);

        [LoggerMessage(EventId = 1721, Level = LogLevel.Information, Message = "starting auto periodic compaction (revision {Revision}, compact-period {Period})")]
        public static partial void StartingPeriodic(ILogger logger, long revision, string period);

        [LoggerMessage(EventId = 1722, Level = LogLevel.Information, Message = "completed auto periodic compaction (revision {Revision}, compact-period {Period})")]
        public static partial void CompletedPeriodic(ILogger logger, long revision, string period);

        [LoggerMessage(EventId = 1723, Level = LogLevel.Warning, Message = "failed auto periodic compaction (revision {Revision}); retry in {RetryInterval}")]
        public static partial void FailedPeriodic(ILogger logger, long revision, string retryInterval);

        [LoggerMessage(EventId = 1724, Level = LogLevel.Information, Message = "starting auto revision compaction (revision {Revision}, revision-compaction-retention {Retention})")]
        public static partial void StartingRevision(ILogger logger, long revision, long retention);

        [LoggerMessage(EventId = 1725, Level = LogLevel.Information, Message = "completed auto revision compaction (revision {Revision}, revision-compaction-retention {Retention})")]
        public static partial void CompletedRevision(ILogger logger, long revision, long retention);

        [LoggerMessage(EventId = 1726, Level = LogLevel.Warning, Message = "failed auto revision compaction (revision {Revision}); retry in {RetryInterval}")]
        public static partial void FailedRevision(ILogger logger, long revision, string retryInterval);

        [LoggerMessage(EventId = 1727, Level = LogLevel.Warning, Message = "auto-compaction proposal at revision {Revision} failed: {Error}")]
        public static partial void ProposalFailed(ILogger logger, long revision, string error);
    }
}
