using Google.Protobuf;

namespace KvStore.Server.Apply;

/// <summary>The result of applying one entry: a response (header filled) or one of etcd's errors.</summary>
public readonly record struct ApplyOutcome(IMessage? Response, EtcdError? Error)
{
    public static ApplyOutcome Ok(IMessage response) => new(response, null);

    public static ApplyOutcome Fail(EtcdError error) => new(null, error);

    /// <summary>The entry was already reflected by the store (index &lt;= consistent index) and was skipped.</summary>
    public static ApplyOutcome Skipped => default;
}
