using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Backup;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Api;

/// <summary>etcd's Maintenance service for a single member.</summary>
public sealed class MaintenanceService : Maintenance.MaintenanceBase
{
    private readonly IProposer _proposer;
    private readonly ILinearizableReads _reads;
    private readonly MembershipCoordinator _members;
    private readonly NodeState _state;
    private readonly MvccStore _store;
    private readonly HeaderFactory _headers;
    private readonly AlarmState _alarms;
    private readonly Quota _quota;
    private readonly SnapshotExporter _snapshots;
    private readonly ILogger<MaintenanceService> _logger;
    private readonly string _storeDirectory;

    public MaintenanceService(
        IProposer proposer, ILinearizableReads reads, MembershipCoordinator members, NodeState state, MvccStore store, HeaderFactory headers, AlarmState alarms, Quota quota, SnapshotExporter snapshots, ServerOptions options, ILogger<MaintenanceService> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _logger = logger;
        _storeDirectory = Path.Combine(options.EffectiveDataDir, "member", "kv");
        _proposer = proposer;
        _reads = reads;
        _members = members;
        _state = state;
        _store = store;
        _headers = headers;
        _alarms = alarms;
        _quota = quota;
        _snapshots = snapshots;
    }

    public override Task<StatusResponse> Status(StatusRequest request, ServerCallContext context)
    {
        var response = new StatusResponse
        {
            Header = _headers.Create(_store.CurrentRevision),
            Version = Versions.EtcdServer,
            DbSize = _store.DbSizeBytes, // >= DbSizeInUse (MvccStore)
            DbSizeInUse = _store.DbSizeInUseBytes,
            DbSizeQuota = _quota.QuotaBytes,
            Leader = _state.LeaderId,
            RaftIndex = _state.CommittedIndex,
            RaftTerm = _state.Term,
            RaftAppliedIndex = _state.AppliedIndex,
            IsLearner = _members.IsLearner,
        };
        // etcd lists a missing leader first, then the alarms.
        if (!_state.HasLeader)
        {
            response.Errors.Add(EtcdErrors.NoLeader.Message);
        }

        foreach (var alarm in _alarms.List(AlarmType.None))
        {
            response.Errors.Add($"memberID:{alarm.MemberID} alarm:{alarm.Alarm.ToString().ToUpperInvariant()} ");
        }

        return Task.FromResult(response);
    }

    public override async Task<HashKVResponse> HashKV(HashKVRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        await _reads.WaitForReadIndexAsync(context.CancellationToken);
        var result = _store.HashKV(request.Revision);
        var error = EtcdErrors.FromMvcc(result.Error);
        if (error is not null)
        {
            throw error.Exception();
        }

        return new HashKVResponse
        {
            Header = _headers.Create(result.Revision),
            Hash = result.Hash,
            CompactRevision = result.CompactRevision,
            HashRevision = result.Revision,
        };
    }

    public override Task<HashResponse> Hash(HashRequest request, ServerCallContext context)
    {
        var result = _store.HashKV(0);
        return Task.FromResult(new HashResponse { Header = _headers.Create(result.Revision), Hash = result.Hash });
    }

    /// <summary>
    /// Every alarm action goes through the log, as in etcd 3.4: GET answers the replicated alarms as of its log index
    /// (the same on every member), ACTIVATE and DEACTIVATE change them cluster-wide. etcd answers without a header.
    /// </summary>
    public override async Task<AlarmResponse> Alarm(AlarmRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        return (AlarmResponse)await _proposer.ProposeAsync(new InternalRequest { Alarm = request }, context.CancellationToken);
    }

    public override async Task<DefragmentResponse> Defragment(DefragmentRequest request, ServerCallContext context)
    {
        // Rewrites the live records and drops the obsolete FasterKV segments (etcd's defrag rewrites the bbolt file).
        EtcdLog.Info(_logger, "starting defragment");
        var path = _storeDirectory;
        var (size, inUse) = (_store.DbSizeBytes, _store.DbSizeInUseBytes);
        EtcdLog.Info(
            _logger,
            "defragmenting",
            ("path", path),
            ("current-db-size-bytes", size),
            ("current-db-size", HumanBytes.Format(size)),
            ("current-db-size-in-use-bytes", inUse),
            ("current-db-size-in-use", HumanBytes.Format(inUse)));
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        await _store.DefragmentAsync();
        var (newSize, newInUse) = (_store.DbSizeBytes, _store.DbSizeInUseBytes);
        EtcdLog.Info(
            _logger,
            "defragmented",
            ("path", path),
            ("current-db-size-bytes-diff", newSize - size),
            ("current-db-size-bytes", newSize),
            ("current-db-size", HumanBytes.Format(newSize)),
            ("current-db-size-in-use-bytes-diff", newInUse - inUse),
            ("current-db-size-in-use-bytes", newInUse),
            ("current-db-size-in-use", HumanBytes.Format(newInUse)),
            ("took", EtcdLog.Duration(System.Diagnostics.Stopwatch.GetElapsedTime(started))));
        EtcdLog.Info(_logger, "finished defragment");
        return new DefragmentResponse { Header = _headers.Create(_store.CurrentRevision) };
    }

    /// <summary>
    /// Streams the store as etcd's bbolt backend (etcd's buckets, then the SHA-256 of the file), which etcdctl saves
    /// and etcd's tools read and restore. The view is taken after a linearizable read barrier; writes go on meanwhile.
    /// </summary>
    public override async Task Snapshot(SnapshotRequest request, IServerStreamWriter<SnapshotResponse> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        await _reads.WaitForReadIndexAsync(context.CancellationToken);
        var first = true;
        await _snapshots.StreamAsync(
            chunk =>
            {
                var response = new SnapshotResponse
                {
                    Header = first ? _headers.Create(chunk.Revision) : null,
                    RemainingBytes = (ulong)chunk.RemainingBytes,
                    // The exporter reuses the chunk's buffer only after this write completes, and the write
                    // serializes the message first: no copy of each piece.
                    Blob = UnsafeByteOperations.UnsafeWrap(chunk.Data),
                    Version = first ? Versions.EtcdServer : string.Empty,
                };
                first = false;
                return responseStream.WriteAsync(response, context.CancellationToken);
            },
            context.CancellationToken);
    }

    public override async Task<MoveLeaderResponse> MoveLeader(MoveLeaderRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        await _members.MoveLeaderAsync(request.TargetID, context.CancellationToken);
        return new MoveLeaderResponse { Header = _headers.Create(_store.CurrentRevision) };
    }
}
