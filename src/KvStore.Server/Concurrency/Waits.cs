using System.Globalization;
using Etcdserverpb;
using Google.Protobuf;

namespace KvStore.Server.Concurrency;

/// <summary>
/// The key layout and waits shared by locks and elections, as etcd's concurrency package does them: a participant's
/// key is <c>&lt;prefix&gt;&lt;lease ID in hex&gt;</c>, the participant whose key has the lowest create revision holds
/// the lock (leads), and the others wait for every key created before theirs to be deleted.
/// </summary>
public static class Waits
{
    /// <summary>The default TTL of a session lease granted for a request that names no lease (clientv3's 60 s).</summary>
    public const long DefaultSessionTtl = 60;

    /// <summary><c>prefix</c> followed by the lease ID in lowercase hex, as Go's <c>%x</c> prints an int64.</summary>
    public static ByteString ParticipantKey(ByteString prefix, long lease)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var hex = lease < 0
            ? "-" + ((ulong)-(lease + 1) + 1).ToString("x", CultureInfo.InvariantCulture)
            : lease.ToString("x", CultureInfo.InvariantCulture);
        return Concat(prefix, ByteString.CopyFromUtf8(hex));
    }

    /// <summary><paramref name="a"/> followed by <paramref name="b"/>.</summary>
    public static ByteString Concat(ByteString a, ByteString b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var bytes = new byte[a.Length + b.Length];
        a.Span.CopyTo(bytes);
        b.Span.CopyTo(bytes.AsSpan(a.Length));
        return UnsafeByteOperations.UnsafeWrap(bytes);
    }

    /// <summary>A read of the key under <paramref name="prefix"/> created first (lowest create revision).</summary>
    public static RangeRequest FirstCreated(ByteString prefix) => new()
    {
        Key = prefix,
        RangeEnd = PrefixEnd(prefix),
        SortTarget = RangeRequest.Types.SortTarget.Create,
        SortOrder = RangeRequest.Types.SortOrder.Ascend,
        Limit = 1,
    };

    /// <summary>
    /// Waits until no key under <paramref name="prefix"/> created at or before <paramref name="maxCreateRevision"/> is
    /// left: reads the newest such key, waits for its deletion, and repeats. Returns the header of the final read.
    /// </summary>
    public static async Task<ResponseHeader> WaitDeletesAsync(LocalClient client, ByteString prefix, long maxCreateRevision, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        while (true)
        {
            var newest = await client.RangeAsync(
                new RangeRequest
                {
                    Key = prefix,
                    RangeEnd = PrefixEnd(prefix),
                    SortTarget = RangeRequest.Types.SortTarget.Create,
                    SortOrder = RangeRequest.Types.SortOrder.Descend,
                    Limit = 1,
                    MaxCreateRevision = maxCreateRevision,
                },
                cancellationToken).ConfigureAwait(false);
            if (newest.Kvs.Count == 0)
            {
                return newest.Header;
            }

            await WaitDeleteAsync(client, newest.Kvs[0].Key, newest.Header.Revision, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Waits for a DELETE of <paramref name="key"/> at or after <paramref name="revision"/>.</summary>
    public static async Task WaitDeleteAsync(LocalClient client, ByteString key, long revision, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        await using var watch = client.Watch(new WatchCreateRequest { Key = key, StartRevision = revision });
        while (true)
        {
            var response = await watch.NextAsync(cancellationToken).ConfigureAwait(false);
            if (response.Events.Any(e => e.Type == Mvccpb.Event.Types.EventType.Delete))
            {
                return;
            }
        }
    }

    /// <summary>The range end that makes <paramref name="prefix"/> a prefix (clientv3's GetPrefixRangeEnd).</summary>
    public static ByteString PrefixEnd(ByteString prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var end = prefix.ToByteArray();
        for (var i = end.Length - 1; i >= 0; i--)
        {
            if (end[i] < 0xff)
            {
                end[i]++;
                return UnsafeByteOperations.UnsafeWrap(end.AsMemory(0, i + 1));
            }
        }

        // Every byte is 0xff (or the prefix is empty): the whole key space from the prefix on.
        return ByteString.CopyFrom(0);
    }
}
