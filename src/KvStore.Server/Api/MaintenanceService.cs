using System.Security.Cryptography;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.Server.Apply;
using KvStore.Server.Hosting;
using KvStore.Internal;
using KvStore.Server.Node;
using KvStore.Server.Replication;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Api;

/// <summary>etcd's Maintenance service for a single member.</summary>
public sealed class MaintenanceService : Maintenance.MaintenanceBase
{
    /// <summary>First bytes of our snapshot format (not bolt: `etcdctl snapshot restore` cannot read it).</summary>
    public static readonly byte[] SnapshotMagic = "KVSTORE-SNAPSHOT-1\n"u8.ToArray();

    private const int SnapshotChunkBytes = 32 * 1024;

    private readonly RaftHost _node;
    private readonly NodeState _state;
    private readonly MvccStore _store;
    private readonly HeaderFactory _headers;
    private readonly AlarmState _alarms;
    private readonly Quota _quota;

    public MaintenanceService(RaftHost node, NodeState state, MvccStore store, HeaderFactory headers, AlarmState alarms, Quota quota)
    {
        _node = node;
        _state = state;
        _store = store;
        _headers = headers;
        _alarms = alarms;
        _quota = quota;
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
            IsLearner = _node.IsLearner,
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
        await _node.WaitForReadIndexAsync(context.CancellationToken);
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
        return (AlarmResponse)await _node.ProposeAsync(new InternalRequest { Alarm = request }, context.CancellationToken);
    }

    public override async Task<DefragmentResponse> Defragment(DefragmentRequest request, ServerCallContext context)
    {
        // Rewrites the live records and drops the obsolete FasterKV segments (etcd's defrag rewrites the bbolt file).
        await _store.DefragmentAsync();
        return new DefragmentResponse { Header = _headers.Create(_store.CurrentRevision) };
    }

    public override async Task Snapshot(SnapshotRequest request, IServerStreamWriter<SnapshotResponse> responseStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        await _node.WaitForReadIndexAsync(context.CancellationToken);
        var (data, revision) = BuildSnapshot();
        var remaining = data.Length;
        var offset = 0;
        var first = true;
        while (remaining > 0)
        {
            var size = Math.Min(SnapshotChunkBytes, remaining);
            remaining -= size;
            await responseStream.WriteAsync(new SnapshotResponse
            {
                Header = first ? _headers.Create(revision) : null,
                RemainingBytes = (ulong)remaining,
                Blob = ByteString.CopyFrom(data, offset, size),
                Version = first ? Versions.EtcdServer : string.Empty,
            });
            offset += size;
            first = false;
        }
    }

    public override async Task<MoveLeaderResponse> MoveLeader(MoveLeaderRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        await _node.MoveLeaderAsync(request.TargetID, context.CancellationToken);
        return new MoveLeaderResponse { Header = _headers.Create(_store.CurrentRevision) };
    }

    /// <summary>
    /// Our snapshot format: magic, the revision, compact revision and number of key-values (varints), every key-value at
    /// that revision as a length-delimited mvccpb.KeyValue, zero padding to a multiple of 512 bytes, then the SHA-256 of
    /// everything before it. etcdctl's `snapshot save` checks exactly that shape (bolt-page-sized body + SHA-256 trailer).
    /// </summary>
    private (byte[] Data, long Revision) BuildSnapshot()
    {
        var revision = _store.CurrentRevision;
        using var buffer = new MemoryStream();
        buffer.Write(SnapshotMagic);
        var output = new CodedOutputStream(buffer, leaveOpen: true);
        output.WriteInt64(revision);
        output.WriteInt64(_store.CompactRevision);
        var all = _store.Range([0], [0], new RangeOptions(Revision: revision));
        output.WriteInt64(all.Kvs.Count);
        foreach (var kv in all.Kvs)
        {
            output.WriteMessage(Apply.Convert.ToProto(kv));
        }

        output.Flush();
        var padding = (int)((512 - (buffer.Length % 512)) % 512);
        buffer.Write(new byte[padding]);
        var body = buffer.ToArray();
        var hash = SHA256.HashData(body);
        var data = new byte[body.Length + hash.Length];
        body.CopyTo(data, 0);
        hash.CopyTo(data, body.Length);
        return (data, revision);
    }
}
