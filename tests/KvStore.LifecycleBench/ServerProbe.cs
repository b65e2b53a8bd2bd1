using System.Globalization;
using System.Text;

/// <summary>
/// What the member did during a phase, to tell where the slow puts' time went: the CPU it used (from /proc, so the same
/// for kvstore and etcd) and its WAL fsyncs (the etcd_disk_wal_fsync_duration_seconds histogram both serve on the
/// client URL's /metrics), read at the start and the end of the phase and subtracted.
/// </summary>
internal sealed class ServerProbe(int pid, string clientUrl) : IDisposable
{
    private const string FsyncBucket = "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"";
    private const string FsyncSum = "etcd_disk_wal_fsync_duration_seconds_sum";
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(10) };

    internal sealed record Sample(double CpuSeconds, double FsyncSeconds, SortedDictionary<double, long> FsyncsAtMost);

    public async Task<Sample> ReadAsync()
    {
        var metrics = await _http.GetStringAsync(clientUrl + "/metrics");
        var buckets = new SortedDictionary<double, long>();
        double sum = 0;
        foreach (var line in metrics.Split('\n'))
        {
            if (line.StartsWith(FsyncBucket, StringComparison.Ordinal))
            {
                var close = line.IndexOf('"', FsyncBucket.Length);
                var bound = line[FsyncBucket.Length..close];
                buckets[bound == "+Inf" ? double.PositiveInfinity : Parse(bound)] = (long)Parse(line[(line.LastIndexOf(' ') + 1)..]);
            }
            else if (line.StartsWith(FsyncSum + " ", StringComparison.Ordinal))
            {
                sum = Parse(line[(FsyncSum.Length + 1)..]);
            }
        }

        // /proc/PID/stat: utime and stime are fields 14 and 15, counted after the parenthesised command name.
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return new Sample(ticks / 100.0, sum, buckets);
    }

    /// <summary>"server CPU 1.23 cores; 4,567 WAL fsyncs, mean 0.41 ms, over 8/16/32/64 ms: a/b/c/d".</summary>
    public static string Describe(Sample start, Sample end, double seconds)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"server CPU {(end.CpuSeconds - start.CpuSeconds) / seconds:F2} cores");
        if (!end.FsyncsAtMost.TryGetValue(double.PositiveInfinity, out var total))
        {
            return text.Append("; no WAL fsync histogram").ToString();
        }

        var count = total - start.FsyncsAtMost.GetValueOrDefault(double.PositiveInfinity);
        text.Append(CultureInfo.InvariantCulture, $"; {count} WAL fsyncs, mean {(end.FsyncSeconds - start.FsyncSeconds) * 1000 / Math.Max(1, count):F2} ms, over 8/16/32/64 ms: ");
        text.Append(string.Join('/', new[] { 0.008, 0.016, 0.032, 0.064 }.Select(bound => count - (AtMost(end, bound) - AtMost(start, bound)))));
        return text.ToString();
    }

    public void Dispose() => _http.Dispose();

    private static long AtMost(Sample s, double bound) => s.FsyncsAtMost.Where(b => b.Key <= bound + 1e-9).Select(b => b.Value).DefaultIfEmpty(0).Max();

    private static double Parse(string s) => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);
}
