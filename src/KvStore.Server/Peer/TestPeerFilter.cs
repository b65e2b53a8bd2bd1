using System.Globalization;

namespace KvStore.Server.Peer;

/// <summary>
/// TESTS ONLY: drops the raft traffic this member receives from chosen peers, so the fault tests can partition
/// peer traffic (one member, the leader, a minority, one direction) without root, network namespaces or
/// iptables. Off unless the environment variable <see cref="EnvironmentVariable"/> names a file; the file holds the
/// member IDs (hex, one per line) whose messages and snapshots this member ignores, as if the network lost them.
/// The test replaces the file to change the partition; it is read on the first message and again at most every
/// 50 ms. A missing file drops nothing. Not an etcd flag and not documented for operators.
/// </summary>
internal sealed class TestPeerFilter
{
    public const string EnvironmentVariable = "KVSTORE_TEST_PEER_DROP_FILE";

    /// <summary>How long a read of the file is trusted before the next message reads it again.</summary>
    public static readonly TimeSpan RecheckInterval = TimeSpan.FromMilliseconds(50);

    private readonly string _path;
    private readonly Func<TimeSpan> _now;
    private readonly object _lock = new();
    private HashSet<ulong> _dropped = [];

    // Null until the file was first read: no sentinel value that the subtraction below could overflow on.
    private TimeSpan? _checkedAt;

    /// <param name="now">A monotonic clock (the server passes the uptime; tests drive their own).</param>
    internal TestPeerFilter(string path, Func<TimeSpan> now)
    {
        _path = path;
        _now = now;
    }

    /// <summary>The filter the environment asks for, or null (the normal case: nothing is ever dropped).</summary>
    public static TestPeerFilter? FromEnvironment()
    {
        var path = System.Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrEmpty(path) ? null : new TestPeerFilter(path, () => TimeSpan.FromMilliseconds(System.Environment.TickCount64));
    }

    /// <summary>Whether traffic from <paramref name="from"/> is to be dropped now.</summary>
    public bool DropsFrom(ulong from)
    {
        lock (_lock)
        {
            var now = _now();
            if (_checkedAt is not { } last || now - last >= RecheckInterval)
            {
                _checkedAt = now;
                Reload();
            }

            return _dropped.Contains(from);
        }
    }

    private void Reload()
    {
        var dropped = new HashSet<ulong>();
        try
        {
            foreach (var line in File.ReadAllLines(_path))
            {
                if (ulong.TryParse(line.Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var id))
                {
                    dropped.Add(id);
                }
            }
        }
        catch (IOException)
        {
            // No file (or none yet): nothing is partitioned.
        }

        _dropped = dropped;
    }
}
