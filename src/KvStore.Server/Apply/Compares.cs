using Etcdserverpb;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// Evaluates one txn compare as etcd does: over every key in [key, range_end) the compare must hold for all of them;
/// with no key, a VALUE compare fails and other targets compare against zero (a missing key has version 0, etc.).
/// </summary>
public static class Compares
{
    public static bool Evaluate(IMvccReader reader, Compare compare)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(compare);
        var result = reader.Range(compare.Key.Span, compare.RangeEnd.Span, default);
        if (result.Error != MvccError.None)
        {
            return false;
        }

        if (result.Kvs.Count == 0)
        {
            return compare.Target != Compare.Types.CompareTarget.Value && Holds(compare, null);
        }

        foreach (var kv in result.Kvs)
        {
            if (!Holds(compare, kv))
            {
                return false;
            }
        }

        return true;
    }

    private static bool Holds(Compare compare, KeyValue? kv)
    {
        int order = compare.Target switch
        {
            Compare.Types.CompareTarget.Value => (kv?.Value ?? []).AsSpan().SequenceCompareTo(
                compare.TargetUnionCase == Compare.TargetUnionOneofCase.Value ? compare.Value.Span : []),
            Compare.Types.CompareTarget.Create => (kv?.CreateRevision ?? 0).CompareTo(
                compare.TargetUnionCase == Compare.TargetUnionOneofCase.CreateRevision ? compare.CreateRevision : 0),
            Compare.Types.CompareTarget.Mod => (kv?.ModRevision ?? 0).CompareTo(
                compare.TargetUnionCase == Compare.TargetUnionOneofCase.ModRevision ? compare.ModRevision : 0),
            Compare.Types.CompareTarget.Version => (kv?.Version ?? 0).CompareTo(
                compare.TargetUnionCase == Compare.TargetUnionOneofCase.Version ? compare.Version : 0),
            Compare.Types.CompareTarget.Lease => (kv?.Lease ?? 0).CompareTo(
                compare.TargetUnionCase == Compare.TargetUnionOneofCase.Lease ? compare.Lease : 0),
            _ => 0,
        };

        return compare.Result switch
        {
            Compare.Types.CompareResult.Equal => order == 0,
            Compare.Types.CompareResult.NotEqual => order != 0,
            Compare.Types.CompareResult.Greater => order > 0,
            Compare.Types.CompareResult.Less => order < 0,
            _ => true,
        };
    }
}
