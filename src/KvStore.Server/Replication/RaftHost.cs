using System.Threading.Channels;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Raft;
using KvStore.Server.Apply;
using KvStore.Server.Identity;
using KvStore.Server.Monitoring;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Peer;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Raft;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Replication;

/// <summary>
/// Drives the Raft core for this member and puts it in the middle of the write path (docs/cluster.md):
/// <code>
///   ProposeAsync ── encode InternalRequest{id} ──► inbox ─┐
///   peer transport (DeliverAsync) ──────────────► inbox ──┤   raft loop (owns RaftNode, one logical thread):
///   read barrier (batched ReadIndex) ────────────► inbox ──┤     drain inbox: Step / Propose (a batch) / ReadIndex / conf changes / Tick
///   PeriodicTimer(--heartbeat-interval) ─────────► inbox ──┘     each Ready: leader sends first; Save + ONE SyncAsync (group commit);
///                                                                  follower sends after the sync; committed entries → apply loop; Advance
///   apply loop: apply in order (skip index ≤ consistent index), complete local waiters by request id, conf changes
///               update the member table and the transport; every --snapshot-count entries checkpoint + compact the log
/// </code>
/// A single member is a one-voter Raft on the same path. Any member takes writes: a follower forwards the proposal to
/// the leader inside Raft (MsgProp) and answers once the entry is applied locally. What callers wait on lives beside
/// it: <see cref="PendingRequests"/> (proposals and membership changes by request id), <see cref="ReadBarrier"/>
/// (ReadIndex batches) and <see cref="ProgressSignals"/> (applied index, leader changes).
/// </summary>
public sealed partial class RaftHost : IProposer, ILinearizableReads, IReplicationProgress, IPeerTransportHandler, IHostedService, IDisposable, IRaftLoop
{
    /// <summary>etcd's maxGapBetweenApplyAndCommitIndex.</summary>
    public const ulong MaxApplyLag = 5000;

    /// <summary>Entries kept behind a snapshot for slow followers (etcd's SnapshotCatchUpEntries).</summary>
    public const ulong SnapshotCatchUpEntries = 5000;

    private readonly ServerOptions _options;
    private readonly MemberIdentity _identity;
    private readonly RaftLogStore _raftLog;
    private readonly string _snapshotDirectory;
    private readonly NodeState _state;
    private readonly ServerMetrics _metrics;
    private readonly Membership _membership;
    private readonly ILogger _logger;
    private readonly IHostApplicationLifetime? _lifetime;
    private readonly Func<PeerTransport> _transportFactory;
    private readonly Channel<InboxItem> _inbox = Channel.CreateUnbounded<InboxItem>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Channel<ApplyItem> _applyQueue = Channel.CreateUnbounded<ApplyItem>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly PendingRequests _pending = new();
    private readonly ProgressSignals _progress;
    private readonly ReadBarrier _reads;
    private readonly TimeSpan _requestTimeout;
    private readonly CancellationTokenSource _stop = new();
    private readonly MvccStore _store;
    private readonly Applier _applier;
    private PeerTransport? _transport;
    private RaftNode? _node;
    private Action<ReadOnlyMemory<byte>> _readIndex = static _ => { };
    private Task _loopTask = Task.CompletedTask;
    private Task _applyTask = Task.CompletedTask;
    private Task _tickTask = Task.CompletedTask;
    private long _nextId;
    private int _tickPending;
    private volatile bool _stopping;
    private volatile bool _failed;

    /// <summary>Creates the host; nothing runs before <see cref="StartAsync"/>.</summary>
    /// <param name="options">Flags (timing, snapshot count, request limits, initial cluster).</param>
    /// <param name="identity">This member.</param>
    /// <param name="store">The state machine.</param>
    /// <param name="raftLog">The durable raft log on the WAL.</param>
    /// <param name="applierFactory">Builds the applier for the store.</param>
    /// <param name="snapshotDirectory">Where outgoing state-machine snapshot files are written.</param>
    /// <param name="state">The shared read model (term, indexes, leader).</param>
    /// <param name="metrics">Metrics.</param>
    /// <param name="transportFactory">The peer transport (resolved at start: it needs this host as its handler).</param>
    /// <param name="logger">Logger.</param>
    /// <param name="lifetime">Stopped when the loop fails or this member is removed (optional in tests).</param>
    public RaftHost(
        ServerOptions options,
        MemberIdentity identity,
        MvccStore store,
        RaftLogStore raftLog,
        Func<MvccStore, Applier> applierFactory,
        string snapshotDirectory,
        NodeState state,
        ServerMetrics metrics,
        Func<PeerTransport> transportFactory,
        ILogger<RaftHost> logger,
        IHostApplicationLifetime? lifetime = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(identity);
        _options = options;
        _identity = identity;
        _store = store;
        _raftLog = raftLog;
        ArgumentNullException.ThrowIfNull(applierFactory);
        _applier = applierFactory(store);
        _snapshotDirectory = snapshotDirectory;
        _state = state;
        _metrics = metrics;
        _transportFactory = transportFactory;
        _logger = logger;
        _lifetime = lifetime;
        _membership = new Membership();

        // etcd: 5 s plus twice the election timeout.
        _requestTimeout = TimeSpan.FromSeconds(5) + TimeSpan.FromMilliseconds(2 * options.ElectionTimeoutMs);
        _progress = new ProgressSignals(state);
        _reads = new ReadBarrier(state, _progress, _requestTimeout, () => _inbox.Writer.TryWrite(InboxItem.Read));
        Members = new MembershipCoordinator(options, identity, _membership, state, _pending, _progress, this, this, _requestTimeout, logger);

        // Request ids embed the member id (etcd's idutil layout: 2 bytes of member id, 5 bytes of time, 1 byte counter
        // that carries into the time), so an id is unique across members and across restarts.
        var prefix = (identity.MemberId & 0xFFFF) << 48;
        var time = ((ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() & 0xFF_FFFF_FFFF) << 8;
        _nextId = (long)(prefix | time);
    }

    /// <summary>The member table as of the applied index.</summary>
    public Membership Membership => _membership;

    /// <summary>Membership changes and leadership transfer.</summary>
    public MembershipCoordinator Members { get; }

    /// <summary>The store the applier writes (a snapshot from the leader is installed into it in place).</summary>
    public MvccStore Store => _store;

    /// <inheritdoc/>
    public ulong MemberId => _identity.MemberId;

    /// <summary>True when this member is the leader.</summary>
    public bool IsLeader => _state.LeaderId == _identity.MemberId;

    /// <summary>Entries kept behind a snapshot for followers that are a little behind (default <see cref="SnapshotCatchUpEntries"/>).</summary>
    public ulong CatchUpEntries { get; init; } = SnapshotCatchUpEntries;

    /// <summary>The raft log's first and last retained index (tests: whether a follower that far behind needs a snapshot).</summary>
    internal (ulong First, ulong Last) LogIndexes => (_raftLog.FirstIndex(), _raftLog.LastIndex());

    /// <summary>The --snapshot-count snapshot being taken, or the last one taken (tests: awaiting the log's compaction).</summary>
    internal Task SnapshotInFlight => Volatile.Read(ref _snapshotInFlight);

    /// <inheritdoc/>
    public Task NextChangeAsync(CancellationToken cancellationToken) => _progress.NextChangeAsync(cancellationToken);

    /// <inheritdoc/>
    public event Action Applied
    {
        add => _progress.AppliedHandlers += value;
        remove => _progress.AppliedHandlers -= value;
    }

    /// <inheritdoc/>
    public Task NextLeaderChangeAsync() => _progress.NextLeaderChangeAsync();

    /// <inheritdoc/>
    public TimeSpan RequestTimeout => _requestTimeout;

    /// <inheritdoc/>
    public async Task<IMessage> ProposeAsync(InternalRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfStopped();
        if (_state.CommittedIndex > _state.AppliedIndex + MaxApplyLag)
        {
            throw EtcdErrors.TooManyRequests.Exception();
        }

        var id = NextId();
        request.Id = id;
        // Keep the auth context a service put in the header; the proposer is always this member.
        request.Header ??= new InternalRequestHeader();
        request.Header.MemberId = _identity.MemberId;
        var data = request.ToByteArray();
        if (data.Length > _options.MaxRequestBytes)
        {
            throw EtcdErrors.RequestTooLarge.Exception();
        }

        var waiter = _pending.Add(id, request, data);
        if (!_inbox.Writer.TryWrite(InboxItem.Of(waiter)))
        {
            _pending.Forget(id);
            _metrics.ProposalsFailed.Inc();
            throw EtcdErrors.Stopped.Exception();
        }

        // As etcd counts them: pending while this member waits for its proposal to be applied; failed when it
        // cannot be proposed or the caller's deadline passes first (an error the applier returns is a result).
        _metrics.ProposalsPending.Inc();
        try
        {
            return await waiter.Task.WaitAsync(_requestTimeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            _pending.Forget(id);
            _metrics.ProposalsFailed.Inc();
            throw (_state.HasLeader ? EtcdErrors.Timeout : ClusterErrors.TimeoutLeaderFail).Exception();
        }
        catch (OperationCanceledException)
        {
            _pending.Forget(id);
            _metrics.ProposalsFailed.Inc();
            throw;
        }
        finally
        {
            _metrics.ProposalsPending.Dec();
        }
    }

    /// <inheritdoc/>
    /// <remarks>Concurrent callers share one ReadIndex request (<see cref="ReadBarrier"/>).</remarks>
    public ValueTask WaitForReadIndexAsync(CancellationToken cancellationToken)
    {
        ThrowIfStopped();
        return new ValueTask(_reads.WaitAsync(cancellationToken));
    }

    /// <summary>Recovers membership, builds the Raft node, starts the loops and the ticker.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        _transport = _transportFactory();
        _membership.Load(_store);
        if (_options.ForceNewCluster)
        {
            ForceNewCluster.RewriteAsync(_raftLog, _identity.MemberId, _logger).GetAwaiter().GetResult();
        }

        var bootstrap = BootstrapVoters();
        var heartbeat = Math.Max(1, _options.HeartbeatIntervalMs);
        var electionTick = (int)Math.Max(2, _options.ElectionTimeoutMs / heartbeat);
        _node = new RaftNode(new RaftConfig
        {
            Id = _identity.MemberId,
            Storage = _raftLog,
            ElectionTick = electionTick,
            HeartbeatTick = 1,
            PreVote = true,
            CheckQuorum = true,
            BootstrapVoters = bootstrap,
            MaxSizePerMsg = 1024 * 1024,
            MaxInflightMsgs = 4096 / 8,
        });

        // Bootstrap members are known from --initial-cluster; later ones from the member table.
        if (bootstrap.Count > 0)
        {
            foreach (var member in InitialMembers())
            {
                _initialMembers[member.Id] = member;
            }
        }

        foreach (var member in _membership.Members)
        {
            ConnectPeer(member);
        }

        foreach (var member in InitialMembers())
        {
            if (_membership.Get(member.Id) is null)
            {
                ConnectPeer(member);
            }
        }

        var node = _node;
        _readIndex = context => node.ReadIndex(context);
        var stored = _raftLog.HardState;
        _syncedTerm = stored.Term;
        _syncedVote = stored.Vote;
        var applied = _store.ConsistentIndex;
        _state.AppliedIndex = applied;
        _state.CommittedIndex = Math.Max(_node.CommitIndex, applied);
        _state.Term = _node.Term;
        Log.Started(
            _logger,
            EtcdLog.Id(_identity.MemberId),
            _node.Term,
            _node.CommitIndex,
            applied,
            _node.LastIndex,
            _node.ConfState.ToString(),
            string.Join(',', bootstrap.Select(EtcdLog.Id)));
        WarnIfEven(_node.ConfState.Voters.Count > 0 ? _node.ConfState.Voters.Count : bootstrap.Count);

        _loopTask = Task.Factory.StartNew(RunLoopAsync, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
        _applyTask = Task.Factory.StartNew(RunApplyLoopAsync, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
        _tickTask = RunTickerAsync(TimeSpan.FromMilliseconds(heartbeat));
        var members = _membership.Members.Count > 0 ? _membership.Members.Count : InitialMembers().Count;
        _ = AdvanceElectionTicksAsync(electionTick, members, heartbeat);
        _ = Members.PublishAsync(_stop.Token);
        return Task.CompletedTask;
    }

    /// <summary>Stops taking requests, stops the loops, checkpoints the store and compacts the raft log behind it.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Log.Stopping(_logger);
        _stopping = true;
        await _stop.CancelAsync();
        _inbox.Writer.TryComplete();
        var loopsEnded = false;
        try
        {
            await _tickTask.WaitAsync(cancellationToken);
            await _loopTask.WaitAsync(cancellationToken);
            await _applyTask.WaitAsync(cancellationToken);
            loopsEnded = true;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host's shutdown timeout ran out (other services took it). Everything acknowledged is already in
            // the WAL, so skipping the final checkpoint only means a longer replay at the next start.
            Log.StopTimedOut(_logger);
        }
        finally
        {
            FailAllWaiters(EtcdErrors.Stopped);
        }

        await WaitForSnapshotInFlightAsync();
        if (loopsEnded && !_failed)
        {
            // A snapshot as every --snapshot-count entries, not only a checkpoint: with its marker the raft log drops
            // what the checkpoint holds (keeping the catch-up entries), so the next start reads the WAL since now
            // instead of every entry since the last periodic snapshot (up to --snapshot-count entries: 200 MiB and
            // ~3 s of a 300,000-key restart).
            await SnapshotAsync(Store);
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _stop.Dispose();

    /// <inheritdoc/>
    public ValueTask DeliverAsync(Message message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        return _inbox.Writer.TryWrite(InboxItem.Of(message)) ? ValueTask.CompletedTask : ValueTask.FromException(EtcdErrors.Stopped.Exception());
    }

    /// <inheritdoc/>
    public ValueTask DeliverSnapshotAsync(ReceivedSnapshot snapshot, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return _inbox.Writer.TryWrite(InboxItem.Of(snapshot)) ? ValueTask.CompletedTask : ValueTask.FromException(EtcdErrors.Stopped.Exception());
    }

    /// <inheritdoc/>
    public void ReportUnreachable(ulong peerId) => _inbox.Writer.TryWrite(InboxItem.Unreachable(peerId));

    /// <inheritdoc/>
    public void ReportSnapshot(ulong peerId, bool success) => _inbox.Writer.TryWrite(InboxItem.SnapshotStatus(peerId, success));

    /// <inheritdoc/>
    public Task WaitForLeaderAsync(CancellationToken cancellationToken)
    {
        ThrowIfStopped();
        return _progress.WaitForLeaderAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public Task WaitAppliedAsync(ulong index, CancellationToken cancellationToken)
    {
        ThrowIfStopped();
        return _progress.WaitAppliedAsync(index, cancellationToken);
    }

    /// <inheritdoc/>
    async Task<RequestResult> IRaftLoop.RunAsync(Func<RaftNode, RequestResult> action, CancellationToken cancellationToken)
    {
        var control = new ControlRequest(action);
        if (!_inbox.Writer.TryWrite(InboxItem.Of(control)))
        {
            throw EtcdErrors.Stopped.Exception();
        }

        return await control.Result.Task.WaitAsync(cancellationToken);
    }

    /// <inheritdoc/>
    ulong IRaftLoop.NextRequestId() => NextId();

    /// <inheritdoc/>
    void IRaftLoop.ThrowIfStopped() => ThrowIfStopped();

    private ulong NextId() => (ulong)Interlocked.Increment(ref _nextId);

    private void ThrowIfStopped()
    {
        if (_stopping || _failed)
        {
            throw EtcdErrors.Stopped.Exception();
        }
    }

    private List<ulong> BootstrapVoters()
    {
        // Stored state wins: anything in the raft log or the store means this member was started before.
        var initial = _raftLog.InitialState();
        var fresh = _raftLog.LastIndex() == 0 && initial.HardState.IsEmpty && _store.ConsistentIndex == 0;
        if (!fresh || _options.InitialClusterState != "new")
        {
            return [];
        }

        return [.. InitialMembers().Select(m => m.Id)];
    }

    private List<ClusterMember> InitialMembers()
    {
        if (_identity.Peers.Count > 0)
        {
            // Joined a running cluster: its members as it described them (ids included), not as the flags imply.
            return [.. _identity.Peers.Select(p => new ClusterMember(p.Id, p.Name, p.PeerUrls, [], p.IsLearner))];
        }

        var cluster = InitialCluster.Parse(_options.InitialCluster);
        return [.. cluster.Select(pair =>
        {
            var id = MemberIdentity.ComputeMemberId(pair.Value, _options.InitialClusterToken);
            var urls = pair.Value.Order(StringComparer.Ordinal).ToArray();
            // Client URLs are not in the flags of other members: every member publishes its own through the log
            // (PublishAsync), so the applied state is the same everywhere.
            return new ClusterMember(id, pair.Key, urls, [], false);
        })];
    }

    private void ConnectPeer(ClusterMember member)
    {
        if (member.Id == _identity.MemberId || _transport is null || member.PeerUrls.Count == 0)
        {
            return;
        }

        var urls = member.PeerUrls.Select(u => new Uri(u)).ToList();
        if (!_transport.UpdatePeer(member.Id, urls))
        {
            _transport.AddPeer(member.Id, urls);
        }
    }

    private void WarnIfEven(int voters)
    {
        if (voters > 0 && voters % 2 == 0)
        {
            var quorum = (voters / 2) + 1;
            Log.EvenVoters(_logger, voters, quorum, voters - quorum, voters - 1);
        }
    }

    private void Fail(Exception e)
    {
        if (_stopping && e is OperationCanceledException)
        {
            return;
        }

        _failed = true;
        Log.LoopFailed(_logger, e);
        FailAllWaiters(EtcdErrors.Stopped);
        Environment.ExitCode = 1;
        _lifetime?.StopApplication();
    }

    private void FailAllWaiters(EtcdError error)
    {
        _pending.FailAll(error);
        _reads.FailPending(error);
        _progress.Stop();
    }

}
