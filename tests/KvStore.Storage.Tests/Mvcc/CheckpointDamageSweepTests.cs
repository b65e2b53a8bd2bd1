using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace KvStore.Storage.Tests.Mvcc;

/// <summary>
/// Damage swept over every file of a stopped store (the format file, FasterKV's checkpoint metadata and index, and the
/// data log, whose records carry a checksum each): at evenly spaced offsets of each file, a flipped byte, 16 zeroed
/// bytes, or the file cut short. Whatever the damage,
/// opening the store either fails with an error naming its directory, or opens at some consistent index with exactly
/// the state the writes up to that index made (the WAL replays the rest): never with silently missing or altered data.
/// </summary>
public sealed class CheckpointDamageSweepTests(ITestOutputHelper output) : IDisposable
{
    private const int Writes = 60;
    private const int Keys = 7;
    private const int OffsetsPerFile = 32;
    private static readonly TimeSpan OpenBound = TimeSpan.FromSeconds(30);
    private readonly TempDir _tmp = new();

    public enum Damage
    {
        FlipByte,
        ZeroSixteenBytes,
        Truncate,
    }

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [InlineData(Damage.FlipByte)]
    [InlineData(Damage.ZeroSixteenBytes)]
    [InlineData(Damage.Truncate)]
    public async Task Damage_in_any_store_file_is_refused_or_leaves_an_exact_state_at_the_recovered_index(Damage damage)
    {
        var pristine = _tmp.Sub("pristine");
        using (var store = Open(pristine))
        {
            for (var i = 1; i <= Writes; i++)
            {
                Write(store, i);
                if (i == Writes / 2)
                {
                    store.Checkpoint(); // an earlier checkpoint, replaced by the one at close
                }
            }
        }

        var files = Directory.EnumerateFiles(pristine, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(pristine, f))
            .Where(f => new FileInfo(Path.Combine(pristine, f)).Length > 0)
            .Order(StringComparer.Ordinal)
            .ToList();
        files.Should().Contain(f => f.Contains("cpr-checkpoints", StringComparison.Ordinal), "the store keeps a log checkpoint");
        files.Should().Contain(f => f.Contains("index-checkpoints", StringComparison.Ordinal), "the store keeps an index checkpoint");

        var outcomes = new Dictionary<string, (int Refused, int Exact, int Earlier)>();
        var n = 0;
        foreach (var file in files)
        {
            var length = new FileInfo(Path.Combine(pristine, file)).Length;
            int refused = 0, exact = 0, earlier = 0;
            foreach (var offset in Enumerable.Range(0, OffsetsPerFile).Select(k => length * k / OffsetsPerFile).Distinct())
            {
                var dir = _tmp.Sub($"case{n++}");
                CopyTree(pristine, dir);
                Apply(damage, Path.Combine(dir, file), offset);
                var what = $"{damage} at offset {offset} of {file} ({length} bytes)";

                MvccStore? store = null;
                try
                {
                    store = await Task.Run(() => Open(dir)).WaitAsync(OpenBound);
                }
                catch (Exception e) when (e is not TimeoutException)
                {
                    e.ToString().Should().Contain(dir, "a refusal names the store's files ({0})", what);
                    if (e.Message.Contains("readable metadata", StringComparison.Ordinal))
                    {
                        e.Message.Should().Contain(Path.Combine(dir, file), "a refusal for unreadable checkpoint metadata names the file ({0})", what);
                    }

                    refused++;
                }

                if (store is not null)
                {
                    using (store)
                    {
                        var index = (int)store.ConsistentIndex;
                        index.Should().BeInRange(0, Writes, what);
                        store.CurrentRevision.Should().Be(index + 1, "each write made one revision ({0})", what);
                        Describe(store).Should().Equal(Expected(index), "the store holds exactly the state at its consistent index {0} ({1})", index, what);
                        if (index == Writes)
                        {
                            exact++;
                        }
                        else
                        {
                            earlier++;
                        }
                    }
                }

                Directory.Delete(dir, recursive: true);
            }

            outcomes[file] = (refused, exact, earlier);
        }

        foreach (var (file, (refused, exact, earlier)) in outcomes)
        {
            output.WriteLine($"{damage} in {file}: {refused} refused, {exact} opened with everything, {earlier} opened at an earlier index with its exact state");
        }
    }

    private static MvccStore Open(string dir) =>
        MvccStore.Open(new MvccStoreOptions { DataDirectory = dir, MemorySizeBits = 20, PageSizeBits = 12, SegmentSizeBits = 20, IndexBuckets = 1 << 8 }, NullLogger.Instance);

    // Write i (raft index i, revision i + 1): every fifth deletes the key the write before it put, the others put a
    // value unique to i. committed runs once it is committed, before its txn closes: no checkpoint comes in between.
    // begun runs with the txn open, before it writes anything.
    internal static void Write(MvccStore store, int i, Action? committed = null, Action? begun = null)
    {
        using var txn = store.BeginWrite((ulong)i);
        begun?.Invoke();
        if (i % 5 == 0)
        {
            txn.DeleteRange(Encoding.UTF8.GetBytes(Key(i - 1)), []).Count.Should().Be(1);
        }
        else
        {
            txn.Put(Encoding.UTF8.GetBytes(Key(i)), Encoding.UTF8.GetBytes(Value(i)), 0);
        }

        txn.Commit();
        committed?.Invoke();
    }

    private static string Key(int i) => $"k{i % Keys}";

    private static string Value(int i) => $"v{i}-" + new string((char)('a' + (i % 26)), 40 + (i % 50));

    /// <summary>Every event from revision 2 on, then the live keys: the whole history the store serves.</summary>
    internal static List<string> Describe(MvccStore store)
    {
        var events = store.ReadEvents("k"u8, "l"u8, 2, store.CurrentRevision, int.MaxValue)
            .Select(e => $"{e.Type} {Encoding.UTF8.GetString(e.Kv.Key)}@{e.Kv.ModRevision}={Encoding.UTF8.GetString(e.Kv.Value)}");
        var live = store.Range("k"u8, "l"u8, default).Kvs
            .Select(kv => $"live {Encoding.UTF8.GetString(kv.Key)}@{kv.ModRevision}={Encoding.UTF8.GetString(kv.Value)}");
        return [.. events, .. live];
    }

    internal static List<string> Expected(int index)
    {
        var events = new List<string>();
        var live = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (var i = 1; i <= index; i++)
        {
            var revision = i + 1;
            if (i % 5 == 0)
            {
                live.Remove(Key(i - 1));
                events.Add($"Delete {Key(i - 1)}@{revision}=");
            }
            else
            {
                events.Add($"Put {Key(i)}@{revision}={Value(i)}");
                live[Key(i)] = $"{revision}={Value(i)}";
            }
        }

        return [.. events, .. live.Select(kv => $"live {kv.Key}@{kv.Value}")];
    }

    private static void Apply(Damage damage, string file, long offset)
    {
        using var f = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
        switch (damage)
        {
            case Damage.FlipByte:
                f.Position = offset;
                var b = f.ReadByte();
                f.Position = offset;
                f.WriteByte((byte)(b ^ 0x5A));
                break;
            case Damage.ZeroSixteenBytes:
                f.Position = offset;
                f.Write(new byte[(int)Math.Min(16, f.Length - offset)]);
                break;
            default:
                f.SetLength(offset);
                break;
        }
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var d in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, d)));
        }

        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
        }
    }
}
