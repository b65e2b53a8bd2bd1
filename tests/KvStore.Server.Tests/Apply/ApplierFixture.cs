using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Api;
using KvStore.Server.Apply;
using KvStore.Server.Identity;
using KvStore.Server.Node;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Apply;

/// <summary>An applier over a real MvccStore in a temporary directory, with a lease table and a recording watch sink.</summary>
public sealed class ApplierFixture : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "kvstore-applier-" + Guid.NewGuid().ToString("N"));
    private ulong _index;

    public ApplierFixture()
    {
        Store = MvccStore.Open(new MvccStoreOptions { DataDirectory = _directory }, NullLogger.Instance);
        var identity = new MemberIdentity(0x1111, 0x2222, "m0", ["http://127.0.0.1:2380"], ["http://127.0.0.1:2379"]);
        var state = new NodeState { Term = 2 };
        Alarms = new AlarmState(Store);
        Applier = new Applier(Store, Leases, Watch, new HeaderFactory(identity, state), Alarms);
    }

    public MvccStore Store { get; }

    public Applier Applier { get; }

    public AlarmState Alarms { get; }

    public FakeLeases Leases { get; } = new();

    public RecordingWatchSink Watch { get; } = new();

    public ApplyOutcome Apply(InternalRequest request) => Applier.Apply(++_index, request);

    public PutResponse Put(string key, string value, long lease = 0) =>
        (PutResponse)Apply(new InternalRequest { Put = new PutRequest { Key = Bytes(key), Value = Bytes(value), Lease = lease } }).Response!;

    /// <summary>Applies an alarm entry, as a member's AlarmRequest proposal does.</summary>
    public AlarmResponse Alarm(AlarmRequest.Types.AlarmAction action, ulong memberId, AlarmType alarm) =>
        (AlarmResponse)Apply(new InternalRequest { Alarm = new AlarmRequest { Action = action, MemberID = memberId, Alarm = alarm } }).Response!;

    public DeleteRangeResponse Delete(string key, string rangeEnd = "") =>
        (DeleteRangeResponse)Apply(new InternalRequest { DeleteRange = new DeleteRangeRequest { Key = Bytes(key), RangeEnd = Bytes(rangeEnd) } }).Response!;

    /// <summary>A txn through the write path (or the read-only path when it has no writes), as KvService routes it.</summary>
    public (TxnResponse? Response, EtcdError? Error) Txn(TxnRequest request)
    {
        if (Applier.IsReadOnly(request))
        {
            return Applier.ExecuteReadOnly(Store, request);
        }

        var outcome = Apply(new InternalRequest { Txn = request });
        return ((TxnResponse?)outcome.Response, outcome.Error);
    }

    public RangeResponse Range(RangeRequest request)
    {
        var (response, error) = RangeExecutor.Execute(Store, request);
        error.Should().BeNull();
        return response!;
    }

    public static ByteString Bytes(string text) => ByteString.CopyFromUtf8(text);

    public void Dispose()
    {
        Store.Dispose();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort.
        }
    }
}

/// <summary>Leases that exist when listed in <see cref="Granted"/>; records attach/detach calls.</summary>
public sealed class FakeLeases : ILeaseApplier
{
    public HashSet<long> Granted { get; } = [];

    public List<(string Key, long OldLease, long NewLease)> Puts { get; } = [];

    public List<(string Key, long Lease)> Deletes { get; } = [];

    public bool Exists(long leaseId) => Granted.Contains(leaseId);

    public void OnPut(byte[] key, long oldLease, long newLease) => Puts.Add((System.Text.Encoding.UTF8.GetString(key), oldLease, newLease));

    public void OnDelete(byte[] key, long lease) => Deletes.Add((System.Text.Encoding.UTF8.GetString(key), lease));

    public IMessage ApplyGrant(LeaseGrantRequest request, MvccWriteTxn txn)
    {
        Granted.Add(request.ID);
        return new LeaseGrantResponse { ID = request.ID, TTL = request.TTL };
    }

    public IMessage ApplyRevoke(LeaseRevokeRequest request, MvccWriteTxn txn)
    {
        if (!Granted.Remove(request.ID))
        {
            throw EtcdErrors.LeaseNotFound.Exception();
        }

        return new LeaseRevokeResponse();
    }

    public List<LeaseCheckpointRequest> Checkpoints { get; } = [];

    public void ApplyCheckpoint(LeaseCheckpointRequest request, MvccWriteTxn txn) => Checkpoints.Add(request);
}

/// <summary>Records what the applier reports to watchers.</summary>
public sealed class RecordingWatchSink : IWatchEventSink
{
    public List<(long Revision, IReadOnlyList<MvccEvent> Events)> Committed { get; } = [];

    public void OnCommitted(long revision, IReadOnlyList<MvccEvent> events) => Committed.Add((revision, events.ToList()));
}
