namespace KvStore.Storage.Mvcc;

/// <summary>Mirrors mvccpb.KeyValue.</summary>
public sealed class KeyValue
{
    public byte[] Key { get; set; } = [];

    public byte[] Value { get; set; } = [];

    public long CreateRevision { get; set; }

    public long ModRevision { get; set; }

    public long Version { get; set; }

    public long Lease { get; set; }
}
