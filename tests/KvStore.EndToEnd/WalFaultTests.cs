using dotnet_etcd;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// Damaged WAL files after a SIGKILL: a torn tail is repaired on start, a corrupt record in the middle stops
/// the start with an error naming the file. The WAL lives in &lt;data-dir&gt;/member/wal (etcd's layout).
/// </summary>
public sealed class WalFaultTests(ITestOutputHelper output) : IDisposable
{
    private const int Keys = 40;
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(20);

    private readonly ServerProcess _server = new();

    [Fact]
    public async Task Torn_wal_tail_is_repaired_and_earlier_acknowledged_writes_are_served()
    {
        var revisions = await WriteKeysThenKillAsync("/torn/");
        var wal = NewestWalFile();
        var end = DataEnd(wal);
        end.Should().BeGreaterThan(16, "the WAL {0} must hold the writes", wal);
        var cut = Math.Min(5, end / 2);
        output.WriteLine($"truncating {wal} from {new FileInfo(wal).Length} to {end - cut} bytes (data ended at {end})");
        using (var f = new FileStream(wal, FileMode.Open, FileAccess.Write))
        {
            f.SetLength(end - cut);
        }

        await _server.StartAsync("existing");
        using var client = new EtcdClient(_server.ClientUrl);
        var all = await client.GetRangeAsync("/torn/", deadline: DateTime.UtcNow + CallTimeout);
        var got = all.Kvs.ToDictionary(kv => kv.Key.ToStringUtf8(), kv => kv.Value.ToStringUtf8());

        // The torn record can only be the last write; everything acknowledged before it must be there.
        for (var i = 0; i < Keys - 1; i++)
        {
            got.Should().ContainKey(Key("/torn/", i)).WhoseValue.Should().Be(Value(i), "write {0} was acknowledged before the torn record", i);
        }

        if (got.TryGetValue(Key("/torn/", Keys - 1), out var last))
        {
            last.Should().Be(Value(Keys - 1));
        }

        var floor = got.Count == Keys ? revisions[^1] : revisions[^2];
        all.Header.Revision.Should().BeGreaterThanOrEqualTo(floor);
        var next = await client.PutAsync("/torn/after", "x", deadline: DateTime.UtcNow + CallTimeout);
        next.Header.Revision.Should().Be(all.Header.Revision + 1, "writes continue after the repaired tail");
    }

    [Fact]
    public async Task Corrupt_byte_in_the_middle_of_a_wal_file_stops_the_start_naming_the_file()
    {
        await WriteKeysThenKillAsync("/corrupt/");
        var wal = WalFiles().OrderByDescending(DataEnd).First();
        var end = DataEnd(wal);
        end.Should().BeGreaterThan(64, "the WAL {0} must hold the writes", wal);

        var bytes = File.ReadAllBytes(wal);
        var at = (int)(end / 2);
        while (at < end - 1 && bytes[at] == 0)
        {
            at++; // a byte that is data, not zero padding
        }

        output.WriteLine($"flipping byte {at} of {wal} (0x{bytes[at]:x2}; data ends at {end})");
        using (var f = new FileStream(wal, FileMode.Open, FileAccess.Write))
        {
            f.Position = at;
            f.WriteByte((byte)(bytes[at] ^ 0xFF));
        }

        var logFrom = _server.LogLineCount;
        _server.StartProcess("existing");
        var exitCode = await _server.WaitExitAsync(TimeSpan.FromSeconds(60));
        var log = _server.LogSince(logFrom);
        exitCode.Should().NotBe(0, "a corrupt WAL record must stop the member\n{0}", log);
        if (ServerProcess.IsRealEtcd)
        {
            // etcd 3.4 stops too but does not say where ("etcdmain: walpb: crc mismatch"); we promise more.
            log.Should().Contain("crc mismatch");
        }
        else
        {
            log.Should().Contain(Path.GetFileName(wal), "the error must name the damaged file");
        }
    }

    [Fact]
    public async Task Sigterm_stops_the_member_cleanly_and_a_restart_serves_every_write()
    {
        var revisions = await WriteKeysAsync("/term/");
        var code = await _server.TerminateAsync(TimeSpan.FromSeconds(30));
        // etcd re-raises SIGTERM after its cleanup (dies by the signal: 128+15); a .NET host returns 0. Both are clean.
        code.Should().BeOneOf([0, 143], "SIGTERM is a clean shutdown\n{0}", _server.LogText());

        await _server.StartAsync("existing");
        using var client = new EtcdClient(_server.ClientUrl);
        var all = await client.GetRangeAsync("/term/", deadline: DateTime.UtcNow + CallTimeout);
        all.Kvs.Select(kv => (kv.Key.ToStringUtf8(), kv.Value.ToStringUtf8(), kv.ModRevision)).Should()
            .Equal(Enumerable.Range(0, Keys).Select(i => (Key("/term/", i), Value(i), revisions[i])));
        all.Header.Revision.Should().Be(revisions[^1]);
    }

    private async Task<long[]> WriteKeysThenKillAsync(string prefix)
    {
        var revisions = await WriteKeysAsync(prefix);
        _server.Kill();
        return revisions;
    }

    private async Task<long[]> WriteKeysAsync(string prefix)
    {
        await _server.StartAsync();
        var revisions = new long[Keys];
        using (var client = new EtcdClient(_server.ClientUrl))
        {
            for (var i = 0; i < Keys; i++)
            {
                revisions[i] = (await client.PutAsync(Key(prefix, i), Value(i), deadline: DateTime.UtcNow + CallTimeout)).Header.Revision;
            }
        }

        return revisions;
    }

    private static string Key(string prefix, int i) => $"{prefix}{i:D4}";

    private static string Value(int i) => $"value-{i}-" + new string((char)('a' + (i % 26)), 40);

    /// <summary>
    /// WAL segment files with data: etcd's *.wal (not its preallocated *.tmp); KvStore's wal.log.N (not FasterLog's
    /// commit metadata under commits/, see docs/storage.md).
    /// </summary>
    private List<string> WalFiles()
    {
        Directory.Exists(_server.WalDir).Should().BeTrue("the WAL directory {0} must exist", _server.WalDir);
        var files = Directory.EnumerateFiles(_server.WalDir, "*", SearchOption.AllDirectories)
            .Where(f => !f.EndsWith(".tmp", StringComparison.Ordinal)
                && !Path.GetRelativePath(_server.WalDir, f).Contains("commit", StringComparison.OrdinalIgnoreCase))
            .Where(f => DataEnd(f) > 0)
            .ToList();
        files.Should().NotBeEmpty("the WAL directory {0} must hold data files", _server.WalDir);
        return files;
    }

    private string NewestWalFile() =>
        WalFiles().OrderBy(f => File.GetLastWriteTimeUtc(f)).ThenBy(f => f, StringComparer.Ordinal).Last();

    /// <summary>Offset just past the last non-zero byte (WAL files may be preallocated with zeros).</summary>
    private static long DataEnd(string path)
    {
        using var f = File.OpenRead(path);
        var buf = new byte[1 << 16];
        var pos = f.Length;
        while (pos > 0)
        {
            var n = (int)Math.Min(buf.Length, pos);
            pos -= n;
            f.Position = pos;
            f.ReadExactly(buf, 0, n);
            for (var i = n - 1; i >= 0; i--)
            {
                if (buf[i] != 0)
                {
                    return pos + i + 1;
                }
            }
        }

        return 0;
    }

    public void Dispose()
    {
        output.WriteLine($"--- server output (data {_server.DataDir}):");
        output.WriteLine(_server.LogText());
        _server.Dispose();
    }
}
