using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Server.Lease;
using KvStore.Server.Node;

namespace KvStore.Server.Tests.Lease;

/// <summary>An in-memory write transaction: records deletes and side-table writes.</summary>
public sealed class FakeLeaseTxn(long currentRevision, Dictionary<string, byte[]> meta) : ILeaseTxn
{
    public List<string> Deleted { get; } = [];

    public long Revision => currentRevision + 1;

    public bool HasKeyChanges => Deleted.Count > 0;

    public void DeleteKey(byte[] key) => Deleted.Add(System.Text.Encoding.UTF8.GetString(key));

    public void PutMeta(string bucket, byte[] key, byte[] value) => meta[$"{bucket}/{Convert.ToHexString(key)}"] = value;

    public void DeleteMeta(string bucket, byte[] key) => meta.Remove($"{bucket}/{Convert.ToHexString(key)}");
}

/// <summary>Records proposals and answers them as applied.</summary>
public sealed class RecordingProposer : IProposer
{
    public List<InternalRequest> Proposals { get; } = [];

    public Task<IMessage> ProposeAsync(InternalRequest request, CancellationToken cancellationToken)
    {
        lock (Proposals)
        {
            Proposals.Add(request);
        }

        return Task.FromResult<IMessage>(new LeaseRevokeResponse());
    }
}

/// <summary>Leadership a test flips.</summary>
public sealed class SwitchableLeader : ILeaderStatus
{
    public bool IsLeader { get; set; } = true;

    public bool HasLeader => true;
}

/// <summary>A recovery source from lists.</summary>
public sealed class ListRecoverySource(Dictionary<string, byte[]> meta, params (string Key, long Lease)[] keys) : ILeaseRecoverySource
{
    public IEnumerable<KeyValuePair<byte[], byte[]>> ReadLeaseRecords() =>
        meta.Where(e => e.Key.StartsWith("lease/", StringComparison.Ordinal))
            .Select(e => KeyValuePair.Create(Convert.FromHexString(e.Key["lease/".Length..]), e.Value));

    public IEnumerable<(byte[] Key, long Lease)> ReadLeasedKeys() =>
        keys.Select(k => (System.Text.Encoding.UTF8.GetBytes(k.Key), k.Lease));
}

/// <summary>The member's own auth context: root at a fixed auth revision.</summary>
public sealed class RootCredentials : KvStore.Server.Auth.IMemberCredentials
{
    public KvStore.Internal.InternalRequestHeader MemberHeader() => new() { Username = "root", AuthRevision = 7 };
}
