namespace KvStore.Server.Auth;

/// <summary>
/// A union of half-open key intervals [start, end), built from one user's permissions of one kind (read or write),
/// merged so that a check is one binary search. An end of null means "to the end of the key space" (etcd's from-key
/// permission, range_end "\0"). A request range is permitted only if one merged interval covers all of it, so a
/// range spanning two permissions that touch ([a,b) and [b,c)) is permitted, as in etcd's interval tree.
/// </summary>
internal sealed class KeyRangeSet
{
    private readonly (byte[] Start, byte[]? End)[] _intervals;

    private KeyRangeSet((byte[] Start, byte[]? End)[] intervals) => _intervals = intervals;

    /// <summary>No keys at all.</summary>
    public static KeyRangeSet Empty { get; } = new([]);

    /// <summary>Merges permission intervals given with etcd's key/range_end conventions.</summary>
    public static KeyRangeSet From(IEnumerable<(byte[] Key, byte[] RangeEnd)> permissions)
    {
        var list = new List<(byte[] Start, byte[]? End)>();
        foreach (var (key, rangeEnd) in permissions)
        {
            var (start, end) = ToInterval(key, rangeEnd);
            if (end is null || Compare(start, end) < 0)
            {
                list.Add((start, end));
            }
        }

        list.Sort((a, b) => Compare(a.Start, b.Start));
        var merged = new List<(byte[] Start, byte[]? End)>();
        foreach (var interval in list)
        {
            if (merged.Count > 0 && EndAtOrAfter(merged[^1].End, interval.Start))
            {
                var last = merged[^1];
                merged[^1] = (last.Start, MaxEnd(last.End, interval.End));
            }
            else
            {
                merged.Add(interval);
            }
        }

        return new KeyRangeSet([.. merged]);
    }

    /// <summary>True if every key of the request range (etcd's key/range_end conventions) lies in the set.</summary>
    public bool Covers(ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd)
    {
        // The last interval starting at or before key is the only candidate: merged intervals do not overlap.
        int lo = 0, hi = _intervals.Length - 1, found = -1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_intervals[mid].Start.AsSpan().SequenceCompareTo(key) <= 0)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        if (found < 0)
        {
            return false;
        }

        var end = _intervals[found].End;
        if (IsFromKey(rangeEnd))
        {
            return end is null;
        }

        if (rangeEnd.IsEmpty || rangeEnd.SequenceCompareTo(key) <= 0)
        {
            // A single key (an inverted range reads nothing, but must still name a permitted key).
            return end is null || key.SequenceCompareTo(end) < 0;
        }

        return end is null || rangeEnd.SequenceCompareTo(end) <= 0;
    }

    private static (byte[] Start, byte[]? End) ToInterval(byte[] key, byte[] rangeEnd)
    {
        if (rangeEnd.Length == 0)
        {
            var pointEnd = new byte[key.Length + 1];
            key.CopyTo(pointEnd, 0);
            return (key, pointEnd);
        }

        return IsFromKey(rangeEnd) ? (key, null) : (key, rangeEnd);
    }

    private static bool IsFromKey(ReadOnlySpan<byte> rangeEnd) => rangeEnd.Length == 1 && rangeEnd[0] == 0;

    private static bool EndAtOrAfter(byte[]? end, byte[] start) => end is null || Compare(end, start) >= 0;

    private static byte[]? MaxEnd(byte[]? a, byte[]? b) => a is null || b is null ? null : Compare(a, b) >= 0 ? a : b;

    private static int Compare(byte[] a, byte[] b) => a.AsSpan().SequenceCompareTo(b);
}
