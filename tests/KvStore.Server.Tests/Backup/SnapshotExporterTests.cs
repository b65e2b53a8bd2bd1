using System.Security.Cryptography;
using System.Text;
using KvStore.Server.Backup;
using KvStore.Server.Lease;
using KvStore.Server.Replication;
using KvStore.Server.Tests.Peer;
using KvStore.Storage.Bolt;
using KvStore.Storage.EtcdSnapshot;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Backup;

public sealed class SnapshotExporterTests : IDisposable
{
    private readonly TempDirectory _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private MvccStore OpenStore() => MvccStore.Open(
        new MvccStoreOptions { DataDirectory = Path.Combine(_tmp.Path, "kv"), IndexBuckets = 1 << 10, PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 20 },
        NullLogger.Instance);

    [Fact]
    public async Task Stream_is_an_etcd_backend_with_its_sha256_and_leaves_no_file_behind()
    {
        using var store = OpenStore();
        using (var txn = store.BeginWrite(1))
        {
            for (var i = 0; i < 2000; i++)
            {
                txn.Put(Encoding.UTF8.GetBytes($"k{i:D5}"), new byte[100 + (i % 300)], lease: i % 2 == 0 ? 0x1234 : 0);
            }

            txn.PutMeta(Lessor.MetaBucket, Lessor.EncodeKey(0x1234), Lessor.EncodeValue(60, 42));
            txn.PutMeta(ClusterMember.BucketName, ClusterMember.Key(0xabc), new ClusterMember(0xabc, "m0", ["http://127.0.0.1:2380"], ["http://127.0.0.1:2379"], false).Encode());
            txn.Commit();
        }

        var exportDir = Path.Combine(_tmp.Path, "export");
        Directory.CreateDirectory(exportDir);
        await File.WriteAllTextAsync(Path.Combine(exportDir, "export-left-by-a-crash.db"), "partial");
        var exporter = new SnapshotExporter(store, exportDir, NullLogger<SnapshotExporter>.Instance);
        Directory.EnumerateFiles(exportDir).Should().BeEmpty("files a crash left behind are removed at start");

        using var received = new MemoryStream();
        var chunks = new List<SnapshotChunk>();
        var revision = await exporter.StreamAsync(
            chunk =>
            {
                chunks.Add(chunk with { Data = chunk.Data.ToArray() });
                received.Write(chunk.Data.Span);
                Directory.EnumerateFiles(exportDir).Should().BeEmpty("the file is unlinked once open");
                return Task.CompletedTask;
            },
            CancellationToken.None);

        revision.Should().Be(2);
        chunks.Should().OnlyContain(c => c.Revision == 2 && c.Data.Length <= SnapshotExporter.ChunkBytes);
        chunks.Select(c => c.RemainingBytes).Should().BeInDescendingOrder().And.EndWith(0);
        var bytes = received.ToArray();
        (bytes.Length % 512).Should().Be(32);
        SHA256.HashData(bytes.AsSpan(0, bytes.Length - 32)).Should().Equal(bytes[^32..]);

        var file = Path.Combine(_tmp.Path, "snap.db");
        await File.WriteAllBytesAsync(file, bytes);
        EtcdSnapshotFile.VerifyHash(file, skipHashCheck: false).Should().Be(bytes.Length - 32);
        using var reader = BoltReader.Open(file);
        EtcdSnapshotFile.Status(reader).Should().Match<EtcdSnapshotStatus>(s => s.Revision == 2 && s.TotalSize == bytes.Length - 32);
        EtcdSnapshotFile.Revisions(reader).Should().HaveCount(2000);
        var lease = Leasepb.Lease.Parser.ParseFrom(reader.Read("lease").Single().Value);
        (lease.ID, lease.TTL, lease.RemainingTTL).Should().Be((0x1234L, 60L, 42L));
        var member = reader.Read("members").Single();
        Encoding.ASCII.GetString(member.Key).Should().Be("abc");
        Encoding.UTF8.GetString(member.Value).Should().Be("{\"id\":2748,\"peerURLs\":[\"http://127.0.0.1:2380\"],\"name\":\"m0\",\"clientURLs\":[\"http://127.0.0.1:2379\"]}");

        // Leases come back in our encoding; membership is left to the restore's flags.
        var imported = EtcdSnapshotFile.MetaRecords(reader, EtcdMetaMapper.Instance).ToList();
        imported.Should().ContainSingle().Which.Value.Should().Equal(Lessor.EncodeValue(60, 42));
    }
}
