using System.Security.Cryptography;
using KvStore.Storage.EtcdSnapshot;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Backup;

/// <summary>One piece of a snapshot stream: the bytes, how many follow it, and the revision of the snapshot.</summary>
public readonly record struct SnapshotChunk(ReadOnlyMemory<byte> Data, long RemainingBytes, long Revision);

/// <summary>
/// The Snapshot RPC's content: a point-in-time view of the store written as etcd's bbolt backend into a temporary
/// file in <c>&lt;data-dir&gt;/member/snapshot-export</c> (so the view is released as soon as the file is written and
/// no more than one chunk is ever in memory), then streamed in chunks followed by the SHA-256 of the file, as etcd
/// sends it. The file is unlinked once open for reading; leftovers of a crash are removed at start.
/// </summary>
public sealed partial class SnapshotExporter
{
    /// <summary>
    /// Bytes per response. etcd sends 32 KiB; eight times that streamed a 1.1 GiB file 1.4x as fast (fewer messages and
    /// flushes), and stays far below the 4 MiB a gRPC client accepts per message by default.
    /// </summary>
    public const int ChunkBytes = 256 * 1024;

    private readonly MvccStore _store;
    private readonly string _directory;
    private readonly ILogger<SnapshotExporter> _logger;

    /// <summary>Creates the exporter and removes temporary files a crash left behind.</summary>
    public SnapshotExporter(MvccStore store, string directory, ILogger<SnapshotExporter> logger)
    {
        _store = store;
        _directory = directory;
        _logger = logger;
        if (Directory.Exists(directory))
        {
            foreach (var stale in Directory.EnumerateFiles(directory, "*.db"))
            {
                File.Delete(stale);
            }
        }
    }

    /// <summary>
    /// Writes the snapshot file, then calls <paramref name="send"/> for each chunk, the last one being the 32-byte
    /// SHA-256 trailer (remaining 0). Returns the revision of the snapshot.
    /// </summary>
    public async Task<long> StreamAsync(Func<SnapshotChunk, Task> send, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(send);
        Directory.CreateDirectory(_directory);
        var path = Path.Combine(_directory, $"export-{Guid.NewGuid():N}.db");
        var started = DateTime.UtcNow;
        FileStream file;
        EtcdSnapshotSummary summary;
        try
        {
            summary = await _store.ExportAsync((view, records) =>
            {
                using var output = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
                return EtcdSnapshotWriter.Write(view, records, output, EtcdMetaMapper.Instance);
            });
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16, FileOptions.SequentialScan);
        }
        finally
        {
            File.Delete(path);
        }

        await using (file)
        {
            Log.Written(_logger, summary.Revision, summary.CompactRevision, summary.Revisions, summary.SizeBytes, (DateTime.UtcNow - started).TotalSeconds);
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[ChunkBytes];
            var remaining = file.Length;
            while (remaining > 0)
            {
                var read = await file.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, remaining)), cancellationToken);
                if (read == 0)
                {
                    throw new EndOfStreamException($"snapshot file {path} ended early");
                }

                remaining -= read;
                sha.AppendData(buffer, 0, read);
                await send(new SnapshotChunk(buffer.AsMemory(0, read), remaining, summary.Revision));
            }

            await send(new SnapshotChunk(sha.GetHashAndReset(), 0, summary.Revision));
        }

        Log.Sent(_logger, summary.Revision, summary.SizeBytes + EtcdSnapshotFile.HashSize, (DateTime.UtcNow - started).TotalSeconds);
        return summary.Revision;
    }

    /// <summary>Log messages of snapshot export. Event IDs 1700-1709.</summary>
    private static partial class Log
    {
        [LoggerMessage(EventId = 1700, Level = LogLevel.Information, Message = "snapshot written: revision {Revision}, compact revision {Compact}, {Records} revisions, {Bytes} bytes in {Seconds:F2}s")]
        public static partial void Written(ILogger logger, long revision, long compact, long records, long bytes, double seconds);

        [LoggerMessage(EventId = 1701, Level = LogLevel.Information, Message = "snapshot sent: revision {Revision}, {Bytes} bytes in {Seconds:F2}s")]
        public static partial void Sent(ILogger logger, long revision, long bytes, double seconds);
    }
}
