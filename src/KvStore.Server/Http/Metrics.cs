using System.Globalization;
using System.Text;

namespace KvStore.Server.Http;

/// <summary>
/// The server's Prometheus metrics, with etcd's names where a metric has an etcd equivalent. A small lock-free
/// registry rendering the text exposition format (no dependency; the hot path is one interlocked add).
/// </summary>
public sealed class Metrics
{
    private static readonly double[] FsyncBuckets = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];
    private static readonly double[] ApplyBuckets = [0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096, 0.8192];

    private readonly List<Func<string>> _gauges = [];

    public Counter ProposalsCommitted { get; } = new("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.");

    public Counter ProposalsApplied { get; } = new("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.");

    public Counter ProposalsFailed { get; } = new("etcd_server_proposals_failed_total", "The total number of failed proposals seen.");

    public Counter SlowApply { get; } = new("etcd_server_slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk).");

    public Counter Batches { get; } = new("kvstore_wal_batches_total", "The total number of WAL batches (one fsync each).");

    public Histogram WalFsync { get; } = new("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", FsyncBuckets);

    public Histogram BackendCommit { get; } = new("etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend.", FsyncBuckets);

    public Histogram ApplyBatch { get; } = new("kvstore_apply_batch_duration_seconds", "Time to apply one committed batch.", ApplyBuckets);

    /// <summary>Adds a gauge whose value is read at scrape time.</summary>
    public void Gauge(string name, string help, Func<double> value) =>
        _gauges.Add(() => $"# HELP {name} {help}\n# TYPE {name} gauge\n{name} {Format(value())}\n");

    /// <summary>The text exposition format.</summary>
    public string Render()
    {
        var text = new StringBuilder();
        foreach (var counter in new[] { ProposalsCommitted, ProposalsApplied, ProposalsFailed, SlowApply, Batches })
        {
            counter.Render(text);
        }

        foreach (var histogram in new[] { WalFsync, BackendCommit, ApplyBatch })
        {
            histogram.Render(text);
        }

        foreach (var gauge in _gauges)
        {
            text.Append(gauge());
        }

        return text.ToString();
    }

    internal static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A monotonically increasing count.</summary>
    public sealed class Counter(string name, string help)
    {
        private long _value;

        public void Add(long n = 1) => Interlocked.Add(ref _value, n);

        internal void Render(StringBuilder text) =>
            text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} counter\n{name} {Interlocked.Read(ref _value)}\n");
    }

    /// <summary>A cumulative histogram with fixed buckets (seconds).</summary>
    public sealed class Histogram(string name, string help, double[] buckets)
    {
        private readonly long[] _counts = new long[buckets.Length + 1];
        private long _sumMicros;

        public void Observe(TimeSpan elapsed)
        {
            var seconds = elapsed.TotalSeconds;
            var i = 0;
            while (i < buckets.Length && seconds > buckets[i])
            {
                i++;
            }

            Interlocked.Increment(ref _counts[i]);
            Interlocked.Add(ref _sumMicros, (long)(elapsed.Ticks / 10));
        }

        internal void Render(StringBuilder text)
        {
            text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} histogram\n");
            long cumulative = 0;
            for (var i = 0; i < buckets.Length; i++)
            {
                cumulative += Interlocked.Read(ref _counts[i]);
                text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"{Format(buckets[i])}\"}} {cumulative}\n");
            }

            cumulative += Interlocked.Read(ref _counts[^1]);
            text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"+Inf\"}} {cumulative}\n");
            text.Append(CultureInfo.InvariantCulture, $"{name}_sum {Format(Interlocked.Read(ref _sumMicros) / 1e6)}\n");
            text.Append(CultureInfo.InvariantCulture, $"{name}_count {cumulative}\n");
        }
    }
}
