using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Api;
using KvStore.Server.Apply;
using KvStore.Server.Hosting;
using KvStore.Server.Http;
using KvStore.Server.Identity;
using KvStore.Server.Options;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Node;

/// <summary>
/// The single-member proposal pipeline, shaped like etcd's raft loop so that Raft can later sit in the middle:
/// <code>
///   ProposeAsync ── validate/size ── encode InternalRequest{id} ──► proposals channel
///   writer loop:  take every queued proposal (a batch) → assign index/term → WAL.Append each
///                 → ONE WAL.SyncAsync for the batch (group commit) → committed index → apply channel
///   apply loop:   apply each entry in order → applied index → complete its waiter (by id)
///                 → every --snapshot-count entries: store checkpoint, WAL released before it
/// </code>
/// While batch N is being applied, batch N+1 is written and fsynced; while a batch fsyncs, the next accumulates.
/// No lock is held across an fsync. Start-up replays WAL entries above the store's consistent index.
/// </summary>
public sealed partial class NodeLoop : IProposer, IHostedService
{
    /// <summary>etcd's maxGapBetweenApplyAndCommitIndex.</summary>
    public const ulong MaxApplyLag = 5000;

    private const int MaxBatch = 4096;

    private readonly ServerOptions _options;
    private readonly MvccStore _store;
    private readonly WriteAheadLog _wal;
    private readonly Applier _applier;
    private readonly NodeState _state;
    private readonly MemberIdentity _identity;
    private readonly Metrics _metrics;
    private readonly ILogger _logger;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly Channel<Proposal> _proposals = Channel.CreateUnbounded<Proposal>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Channel<Proposal[]> _committed = Channel.CreateBounded<Proposal[]>(new BoundedChannelOptions(4) { SingleReader = true, SingleWriter = true });
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<IMessage>> _waiters = new();
    private readonly TimeSpan _requestTimeout;
    private TaskCompletionSource _appliedSignal = NewSignal();
    private Task _writerTask = Task.CompletedTask;
    private Task _applyTask = Task.CompletedTask;
    private long _nextId;
    private ulong _lastIndex;
    private ulong _appliedSinceCheckpoint;
    private volatile bool _stopping;
    private volatile bool _failed;

    public NodeLoop(
        ServerOptions options,
        MvccStore store,
        WriteAheadLog wal,
        Applier applier,
        NodeState state,
        MemberIdentity identity,
        Metrics metrics,
        ILogger<NodeLoop> logger,
        IHostApplicationLifetime lifetime)
    {
        _options = options;
        _store = store;
        _wal = wal;
        _applier = applier;
        _state = state;
        _identity = identity;
        _metrics = metrics;
        _logger = logger;
        _lifetime = lifetime;

        // etcd: 5 s plus twice the election timeout.
        _requestTimeout = TimeSpan.FromSeconds(5) + TimeSpan.FromMilliseconds(2 * options.ElectionTimeoutMs);
        _nextId = (long)(((ulong)DateTime.UtcNow.Ticks & 0xFFFFFFFFFF) << 20);
    }

    /// <summary>Recovers from the WAL, then starts the writer and apply loops.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await RecoverAsync(cancellationToken);
        _writerTask = Task.Run(WriterLoopAsync, CancellationToken.None);
        _applyTask = Task.Run(ApplyLoopAsync, CancellationToken.None);
    }

    /// <summary>Stops taking proposals, drains what was accepted (written, synced, applied, answered), checkpoints.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Log.Stopping(_logger);
        _stopping = true;
        _proposals.Writer.TryComplete();
        try
        {
            await _writerTask.WaitAsync(cancellationToken);
            await _applyTask.WaitAsync(cancellationToken);
        }
        finally
        {
            FailAllWaiters(EtcdErrors.Stopped);
        }

        if (!_failed)
        {
            _store.Checkpoint();
            _wal.ReleaseBefore(_state.AppliedIndex);
        }
    }

    /// <inheritdoc/>
    public async Task<IMessage> ProposeAsync(InternalRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (_stopping || _failed)
        {
            throw EtcdErrors.Stopped.Exception();
        }

        if (_state.CommittedIndex > _state.AppliedIndex + MaxApplyLag)
        {
            throw EtcdErrors.TooManyRequests.Exception();
        }

        var id = (ulong)Interlocked.Increment(ref _nextId);
        request.Id = id;
        request.Header = new InternalRequestHeader { MemberId = _identity.MemberId };
        var data = request.ToByteArray();
        if (data.Length > _options.MaxRequestBytes)
        {
            throw EtcdErrors.RequestTooLarge.Exception();
        }

        var waiter = new TaskCompletionSource<IMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiters[id] = waiter;
        if (!_proposals.Writer.TryWrite(new Proposal(id, request, data)))
        {
            _waiters.TryRemove(id, out _);
            throw EtcdErrors.Stopped.Exception();
        }

        try
        {
            return await waiter.Task.WaitAsync(_requestTimeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            _waiters.TryRemove(id, out _);
            throw EtcdErrors.Timeout.Exception();
        }
        catch (OperationCanceledException)
        {
            _waiters.TryRemove(id, out _);
            throw;
        }
    }

    /// <summary>
    /// A linearizable read barrier: completes once everything committed when it was called is applied
    /// (for one member, committed = durable in the WAL).
    /// </summary>
    public ValueTask WaitForReadIndexAsync(CancellationToken cancellationToken)
    {
        if (_failed)
        {
            throw EtcdErrors.Stopped.Exception();
        }

        var target = _state.CommittedIndex;
        return _state.AppliedIndex >= target ? ValueTask.CompletedTask : WaitAppliedAsync(target, cancellationToken);
    }

    private async ValueTask WaitAppliedAsync(ulong target, CancellationToken cancellationToken)
    {
        while (_state.AppliedIndex < target)
        {
            var signal = Volatile.Read(ref _appliedSignal);
            if (_state.AppliedIndex >= target)
            {
                break;
            }

            if (_failed)
            {
                throw EtcdErrors.Stopped.Exception();
            }

            try
            {
                await signal.Task.WaitAsync(_requestTimeout, cancellationToken);
            }
            catch (TimeoutException)
            {
                throw EtcdErrors.TimeoutWaitAppliedIndex.Exception();
            }
        }
    }

    private async Task RecoverAsync(CancellationToken cancellationToken)
    {
        var replay = _wal.Replay();
        var consistentIndex = _store.ConsistentIndex;
        var term = Math.Max(replay.HardState?.Term ?? 1, 1);
        var count = 0;
        _lastIndex = Math.Max(consistentIndex, replay.Snapshot?.Index ?? 0);
        foreach (var entry in replay.Entries)
        {
            term = Math.Max(term, entry.Term);
            _lastIndex = Math.Max(_lastIndex, entry.Index);
            if (entry.Index <= consistentIndex || entry.Type != 0)
            {
                continue;
            }

            var request = InternalRequest.Parser.ParseFrom(entry.Data.Span);
            _applier.Apply(entry.Index, request);
            count++;
        }

        // A restart is a new election for a single member: the term goes up by one, as etcd's does.
        term++;
        _wal.Append(new WalHardState(term, _identity.MemberId, _lastIndex));
        await _wal.SyncAsync(cancellationToken);
        _state.Term = term;
        _state.CommittedIndex = _lastIndex;
        _state.AppliedIndex = _lastIndex;
        _state.LeaderId = _identity.MemberId;
        Log.Recovered(_logger, consistentIndex, _store.CurrentRevision, count, _lastIndex, term);
    }

    private async Task WriterLoopAsync()
    {
        var reader = _proposals.Reader;
        var term = _state.Term;
        try
        {
            var batch = new List<Proposal>(64);
            while (await reader.WaitToReadAsync())
            {
                batch.Clear();
                while (batch.Count < MaxBatch && reader.TryRead(out var proposal))
                {
                    proposal.Index = ++_lastIndex;
                    _wal.Append(new WalEntry(proposal.Index, term, 0, proposal.Data));
                    batch.Add(proposal);
                }

                var started = Stopwatch.GetTimestamp();
                await _wal.SyncAsync();
                _metrics.WalFsync.Observe(Stopwatch.GetElapsedTime(started));
                _metrics.Batches.Add();
                _metrics.ProposalsCommitted.Add(batch.Count);
                _state.CommittedIndex = _lastIndex;
                await _committed.Writer.WriteAsync(batch.ToArray());
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
        finally
        {
            _committed.Writer.TryComplete();
        }
    }

    private async Task ApplyLoopAsync()
    {
        var reader = _committed.Reader;
        try
        {
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out var batch))
                {
                    ApplyBatch(batch);
                }
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    private void ApplyBatch(Proposal[] batch)
    {
        var started = Stopwatch.GetTimestamp();
        foreach (var proposal in batch)
        {
            var outcome = _applier.Apply(proposal.Index, proposal.Request);
            _state.AppliedIndex = proposal.Index;
            _metrics.ProposalsApplied.Add();
            if (_waiters.TryRemove(proposal.Id, out var waiter))
            {
                if (outcome.Error is { } error)
                {
                    waiter.TrySetException(error.Exception());
                }
                else
                {
                    waiter.TrySetResult(outcome.Response!);
                }
            }
        }

        _metrics.ApplyBatch.Observe(Stopwatch.GetElapsedTime(started));
        Interlocked.Exchange(ref _appliedSignal, NewSignal()).TrySetResult();

        _appliedSinceCheckpoint += (ulong)batch.Length;
        if (_appliedSinceCheckpoint >= Math.Max(1, _options.SnapshotCount))
        {
            _appliedSinceCheckpoint = 0;
            var index = _state.AppliedIndex;
            var checkpointStarted = Stopwatch.GetTimestamp();
            _store.Checkpoint();
            _metrics.BackendCommit.Observe(Stopwatch.GetElapsedTime(checkpointStarted));
            _wal.ReleaseBefore(index);
            Log.Checkpointed(_logger, index);
        }
    }

    private void Fail(Exception e)
    {
        _failed = true;
        Log.NodeLoopFailed(_logger, e);
        FailAllWaiters(EtcdErrors.Stopped);
        Interlocked.Exchange(ref _appliedSignal, NewSignal()).TrySetResult();
        Environment.ExitCode = 1;
        _lifetime.StopApplication();
    }

    private void FailAllWaiters(EtcdError error)
    {
        foreach (var id in _waiters.Keys)
        {
            if (_waiters.TryRemove(id, out var waiter))
            {
                waiter.TrySetException(error.Exception());
            }
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>One accepted proposal: its id, the decoded request (applied without re-parsing) and its encoding.</summary>
    private sealed class Proposal(ulong id, InternalRequest request, byte[] data)
    {
        public ulong Id { get; } = id;

        public InternalRequest Request { get; } = request;

        public byte[] Data { get; } = data;

        public ulong Index { get; set; }
    }
}
