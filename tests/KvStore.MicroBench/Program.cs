using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// microbench: the hot paths of one write, each on its own, in this process (no separate build per benchmark), with
// few iterations so the whole set runs in about a minute. Filter with --filter '*Wal*' etc. (BenchmarkDotNet's
// arguments). Compare runs of the same machine only; the WAL rows are bound by the disk's fsync.
var config = DefaultConfig.Instance
    .AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance).WithWarmupCount(2).WithIterationCount(5))
    .WithOptions(ConfigOptions.DisableOptimizationsValidator | ConfigOptions.JoinSummary)
    .WithArtifactsPath(Path.Combine(Path.GetTempPath(), "kvstore-microbench"));
BenchmarkSwitcher.FromAssembly(typeof(KvStore.MicroBench.WalBenchmarks).Assembly).Run(args, config);
