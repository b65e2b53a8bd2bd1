using System.Diagnostics;
using KvStore.Raft;
using KvStore.Server.Identity;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Storage;
using KvStore.Storage.Bolt;
using KvStore.Storage.EtcdSnapshot;
using KvStore.Storage.Mvcc;
using KvStore.Storage.Raft;
using KvStore.Storage.Wal;
using Microsoft.Extensions.Logging.Abstractions;
using RaftSnapshot = KvStore.Raft.Snapshot;

namespace KvStore.Server.Backup;

/// <summary>What <c>kvstore snapshot restore</c> is asked to do (etcd's restore flags).</summary>
public sealed record SnapshotRestoreOptions(
    string File,
    string DataDir,
    string Name,
    string InitialCluster,
    string InitialClusterToken,
    IReadOnlyList<string> InitialAdvertisePeerUrls,
    bool SkipHashCheck);

/// <summary>What a restore produced.</summary>
public sealed record SnapshotRestoreResult(long Revision, long CompactRevision, long Revisions, int Leases, MemberIdentity Identity, TimeSpan Took);

/// <summary>
/// Builds a new data directory from a snapshot (ours or etcd's: both are etcd's bbolt backend) for a member of a
/// new cluster, as etcd's <c>snapshot restore</c> does: every revision, lease and the compaction point are kept; the
/// old membership is dropped and the member's identity comes from the restore flags, so each member of the new
/// cluster is restored from the same file with its own --name. As etcd's restore, the new membership is written as
/// the state at raft index N = number of members, term 1: the store holds the members (consistent index N) and the
/// WAL a snapshot point at N whose voters are those members, so every restored member starts from the same raft
/// state and the flags of the first start do not matter.
/// Crash safety: everything is built and synced in <c>&lt;data-dir&gt;.restore-tmp</c> and renamed to the data
/// directory only when complete, so a crash leaves no data directory (a leftover temporary one is never started and
/// is replaced by the next restore).
/// </summary>
public static class SnapshotRestore
{
    /// <summary>Runs the restore; <paramref name="progress"/> receives a line now and then on long work.</summary>
    /// <exception cref="OptionsException">The flags are inconsistent or the data directory exists.</exception>
    /// <exception cref="InvalidDataException">The snapshot is damaged or not an etcd backend.</exception>
    public static SnapshotRestoreResult Run(SnapshotRestoreOptions options, Action<string> progress)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(progress);
        var started = Stopwatch.StartNew();
        var (identity, members) = MembershipFor(options);
        var dataDir = Path.GetFullPath(options.DataDir).TrimEnd(Path.DirectorySeparatorChar);
        if (Directory.Exists(dataDir) || File.Exists(dataDir))
        {
            throw new OptionsException($"data-dir \"{options.DataDir}\" exists");
        }

        if (!File.Exists(options.File))
        {
            throw new FileNotFoundException($"open {options.File}: no such file or directory", options.File);
        }

        EtcdSnapshotFile.VerifyHash(options.File, options.SkipHashCheck);
        var tmp = dataDir + ".restore-tmp";
        if (Directory.Exists(tmp))
        {
            Directory.Delete(tmp, recursive: true);
        }

        var memberDir = Path.Combine(tmp, "member");
        long revisions = 0;
        var leases = 0;
        EtcdSnapshotContent content;
        try
        {
            using (var reader = BoltReader.Open(options.File))
            {
                content = EtcdSnapshotFile.ReadContent(reader);
                var meta = EtcdSnapshotFile.MetaRecords(reader, EtcdMetaMapper.Instance).ToList();
                leases = meta.Count(m => m.Bucket == Lease.Lessor.MetaBucket);
                meta.AddRange(members.Select(m => new MetaRecord(ClusterMember.BucketName, ClusterMember.Key(m.Id), m.Encode())));
                var records = EtcdSnapshotFile.Revisions(reader).Select(r =>
                {
                    if (++revisions % 1_000_000 == 0)
                    {
                        progress($"restored {revisions} revisions ({started.Elapsed.TotalSeconds:F0}s)");
                    }

                    return r;
                });
                MvccStore.WriteImage(
                    new MvccStoreOptions { DataDirectory = Path.Combine(memberDir, "kv") },
                    NullLogger.Instance,
                    consistentIndex: (ulong)members.Count,
                    content.Revision,
                    content.CompactRevision,
                    records,
                    meta);
            }

            WriteRaftState(Path.Combine(memberDir, "wal"), members);
            MemberIdentity.Save(memberDir, identity);
            DurableDirectory.Sync(memberDir);
            DurableDirectory.Sync(tmp);
            Directory.Move(tmp, dataDir);
            DurableDirectory.Sync(Path.GetDirectoryName(dataDir)!);
        }
        catch
        {
            if (Directory.Exists(tmp))
            {
                Directory.Delete(tmp, recursive: true);
            }

            throw;
        }

        return new SnapshotRestoreResult(content.Revision, content.CompactRevision, revisions, leases, identity, started.Elapsed);
    }

    /// <summary>The identity of the restored member and the new cluster's members, checked as etcd checks its restore flags.</summary>
    private static (MemberIdentity Identity, List<ClusterMember> Members) MembershipFor(SnapshotRestoreOptions options)
    {
        var cluster = Options.InitialCluster.Parse(options.InitialCluster);
        if (!cluster.TryGetValue(options.Name, out var clusterUrls))
        {
            throw new OptionsException($"couldn't find local name \"{options.Name}\" in the initial cluster configuration");
        }

        var own = clusterUrls.Order(StringComparer.Ordinal).ToArray();
        var advertised = options.InitialAdvertisePeerUrls.Order(StringComparer.Ordinal).ToArray();
        if (!own.SequenceEqual(advertised, StringComparer.Ordinal))
        {
            throw new OptionsException(
                $"--initial-cluster has {options.Name}={string.Join(',', clusterUrls)} but missing from --initial-advertise-peer-urls={string.Join(',', options.InitialAdvertisePeerUrls)} " +
                $"(resolved urls: \"{string.Join(',', advertised)}\" != \"{string.Join(',', own)}\")");
        }

        var members = cluster
            .Select(pair => new ClusterMember(
                MemberIdentity.ComputeMemberId(pair.Value, options.InitialClusterToken),
                pair.Key,
                [.. pair.Value.Order(StringComparer.Ordinal)],
                [],
                false))
            .OrderBy(m => m.Id)
            .ToList();
        var identity = new MemberIdentity(
            MemberIdentity.ComputeMemberId(own, options.InitialClusterToken),
            MemberIdentity.ComputeClusterId(members.Select(m => m.Id)),
            options.Name,
            own,
            []);
        return (identity, members);
    }

    /// <summary>The raft state of a new cluster at index N (one per member), term 1, with the members as voters.</summary>
    private static void WriteRaftState(string walDir, List<ClusterMember> members)
    {
        var index = (ulong)members.Count;
        using var wal = WriteAheadLog.Open(walDir, NullLogger.Instance);
        var log = RaftLogStore.Open(wal, NullLogger.Instance);
        var snapshot = new RaftSnapshot
        {
            Metadata = new SnapshotMetadata { Index = index, Term = 1, ConfState = new ConfState { Voters = [.. members.Select(m => m.Id)] } },
        };
        log.Save(new HardState(1, 0, index), [], snapshot);
        log.SyncAsync().AsTask().GetAwaiter().GetResult();
    }

}
