using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace KvStore.Storage.Bolt;

/// <summary>
/// Reads a bbolt database file without bbolt: picks the current meta page (valid checksum, highest transaction id),
/// then walks top-level buckets in key order, inline buckets and overflow pages included. Every page read is checked
/// (id, type, bounds); a damaged file throws <see cref="InvalidDataException"/> naming it. Bytes past the last page
/// (etcd's SHA-256 trailer) are ignored.
/// </summary>
public sealed class BoltReader : IDisposable
{
    private const int MaxDepth = 64;

    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly long _length;
    private readonly Dictionary<string, byte[]> _buckets = new(StringComparer.Ordinal);

    private BoltReader(string path)
    {
        _path = Path.GetFullPath(path);
        _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        _length = RandomAccess.GetLength(_file);
    }

    /// <summary>The page size recorded in the meta page.</summary>
    public int PageSize { get; private set; }

    /// <summary>The high-water mark: the number of pages in use.</summary>
    public ulong PageCount { get; private set; }

    /// <summary>The transaction id of the current meta page.</summary>
    public ulong TxId { get; private set; }

    /// <summary>Names of the top-level buckets, in key order.</summary>
    public IReadOnlyList<string> BucketNames { get; private set; } = [];

    /// <summary>Opens a bbolt file and reads its meta page and root bucket.</summary>
    public static BoltReader Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var reader = new BoltReader(path);
        try
        {
            reader.ReadMeta();
            return reader;
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    /// <summary>Whether a top-level bucket exists.</summary>
    public bool HasBucket(string name) => _buckets.ContainsKey(name);

    /// <summary>
    /// The key/value pairs of a top-level bucket in key order (nested buckets inside it are skipped); nothing when the
    /// bucket does not exist.
    /// </summary>
    public IEnumerable<(byte[] Key, byte[] Value)> Read(string bucket)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        if (!_buckets.TryGetValue(bucket, out var value))
        {
            return [];
        }

        return ReadBucketValue(value, 0).Where(e => (e.Flags & BoltFormat.BucketLeafFlag) == 0).Select(e => (e.Key, e.Value));
    }

    /// <summary>The last key of a top-level bucket (following the rightmost path, no scan), or null when it is empty or missing.</summary>
    public byte[]? LastKey(string bucket)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        if (!_buckets.TryGetValue(bucket, out var value) || value.Length < BoltFormat.BucketHeaderSize)
        {
            return null;
        }

        var pgid = BinaryPrimitives.ReadUInt64LittleEndian(value);
        if (pgid == 0)
        {
            return ReadBucketValue(value, 0).LastOrDefault().Key;
        }

        for (var depth = 0; depth <= MaxDepth; depth++)
        {
            var page = ReadPage(pgid);
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(8));
            var count = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(10));
            if (count == 0)
            {
                return null;
            }

            if (flags == BoltFormat.LeafPage)
            {
                return LeafElements(page).Last().Key;
            }

            if (flags != BoltFormat.BranchPage)
            {
                throw Bad($"page {pgid} has flags 0x{flags:X2} where a branch or leaf page was expected");
            }

            var at = BoltFormat.PageHeaderSize + ((count - 1) * BoltFormat.ElementSize);
            CheckRange(page, at, BoltFormat.ElementSize, pgid);
            pgid = BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(at + 8));
        }

        throw Bad($"the tree of bucket '{bucket}' is deeper than {MaxDepth} levels (a cycle?)");
    }

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();

    private InvalidDataException Bad(string what) => new($"bbolt file '{_path}' is corrupt or not a bbolt database: {what}");

    private void ReadMeta()
    {
        (ulong Txid, int PageSize, ulong Root, ulong Pgid)? best = null;
        var firstPageSize = 0;
        foreach (var offset in new long[] { 0, -1 })
        {
            var at = offset >= 0 ? offset : (firstPageSize > 0 ? firstPageSize : BoltFormat.DefaultPageSize);
            var buffer = new byte[BoltFormat.PageHeaderSize + BoltFormat.MetaSize];
            if (_length < at + buffer.Length || RandomAccess.Read(_file, buffer, at) != buffer.Length)
            {
                continue;
            }

            var meta = buffer.AsSpan(BoltFormat.PageHeaderSize);
            if (BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(8)) != BoltFormat.MetaPage ||
                BinaryPrimitives.ReadUInt32LittleEndian(meta) != BoltFormat.Magic ||
                BinaryPrimitives.ReadUInt32LittleEndian(meta[4..]) != BoltFormat.Version ||
                BinaryPrimitives.ReadUInt64LittleEndian(meta[56..]) != BoltFormat.Fnv1a64(meta[..56]))
            {
                continue;
            }

            var pageSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(meta[8..]);
            if (offset == 0)
            {
                firstPageSize = pageSize;
            }

            var txid = BinaryPrimitives.ReadUInt64LittleEndian(meta[48..]);
            if (pageSize >= 1024 && pageSize <= 1 << 20 && (best is null || txid > best.Value.Txid))
            {
                best = (txid, pageSize, BinaryPrimitives.ReadUInt64LittleEndian(meta[16..]), BinaryPrimitives.ReadUInt64LittleEndian(meta[40..]));
            }
        }

        if (best is not { } m)
        {
            throw Bad("no valid meta page (bad magic, version or checksum)");
        }

        PageSize = m.PageSize;
        PageCount = m.Pgid;
        TxId = m.Txid;
        if ((long)m.Pgid * m.PageSize > _length)
        {
            throw Bad($"the meta page claims {m.Pgid} pages of {m.PageSize} bytes but the file has {_length} bytes (truncated?)");
        }

        var names = new List<string>();
        foreach (var (flags, key, value) in ReadTree(m.Root, 0))
        {
            if ((flags & BoltFormat.BucketLeafFlag) != 0)
            {
                var name = Encoding.UTF8.GetString(key);
                names.Add(name);
                _buckets[name] = value;
            }
        }

        BucketNames = names;
    }

    /// <summary>The elements of a bucket given its value in the parent (header, plus the page when inline).</summary>
    private IEnumerable<(uint Flags, byte[] Key, byte[] Value)> ReadBucketValue(byte[] value, int depth)
    {
        if (value.Length < BoltFormat.BucketHeaderSize)
        {
            throw Bad($"a bucket header of {value.Length} bytes");
        }

        var root = BinaryPrimitives.ReadUInt64LittleEndian(value);
        if (root != 0)
        {
            return ReadTree(root, depth);
        }

        var inline = value.AsMemory(BoltFormat.BucketHeaderSize);
        if (inline.Length < BoltFormat.PageHeaderSize || BinaryPrimitives.ReadUInt16LittleEndian(inline.Span[8..]) != BoltFormat.LeafPage)
        {
            throw Bad("an inline bucket without a leaf page");
        }

        return LeafElements(inline.ToArray());
    }

    private IEnumerable<(uint Flags, byte[] Key, byte[] Value)> ReadTree(ulong pgid, int depth)
    {
        if (depth > MaxDepth)
        {
            throw Bad($"the tree is deeper than {MaxDepth} levels at page {pgid} (a cycle?)");
        }

        var page = ReadPage(pgid);
        var flags = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(8));
        if (flags == BoltFormat.LeafPage)
        {
            foreach (var element in LeafElements(page))
            {
                yield return element;
            }

            yield break;
        }

        if (flags != BoltFormat.BranchPage)
        {
            throw Bad($"page {pgid} has flags 0x{flags:X2} where a branch or leaf page was expected");
        }

        var count = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(10));
        var children = new ulong[count];
        for (var i = 0; i < count; i++)
        {
            var at = BoltFormat.PageHeaderSize + (i * BoltFormat.ElementSize);
            CheckRange(page, at, BoltFormat.ElementSize, pgid);
            children[i] = BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(at + 8));
        }

        foreach (var child in children)
        {
            foreach (var element in ReadTree(child, depth + 1))
            {
                yield return element;
            }
        }
    }

    private IEnumerable<(uint Flags, byte[] Key, byte[] Value)> LeafElements(byte[] page)
    {
        var count = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(10));
        var pgid = BinaryPrimitives.ReadUInt64LittleEndian(page);
        for (var i = 0; i < count; i++)
        {
            var at = BoltFormat.PageHeaderSize + (i * BoltFormat.ElementSize);
            CheckRange(page, at, BoltFormat.ElementSize, pgid);
            var flags = BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(at));
            var pos = (long)BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(at + 4));
            var keyLength = (long)BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(at + 8));
            var valueLength = (long)BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(at + 12));
            CheckRange(page, at + pos, keyLength + valueLength, pgid);
            var key = page.AsSpan((int)(at + pos), (int)keyLength).ToArray();
            var value = page.AsSpan((int)(at + pos + keyLength), (int)valueLength).ToArray();
            yield return (flags, key, value);
        }
    }

    private void CheckRange(byte[] page, long offset, long length, ulong pgid)
    {
        if (offset < 0 || length < 0 || offset + length > page.Length)
        {
            throw Bad($"an element of page {pgid} points outside the page");
        }
    }

    private byte[] ReadPage(ulong pgid)
    {
        if (pgid < 2 || pgid >= PageCount)
        {
            throw Bad($"page id {pgid} is outside the data pages [2, {PageCount})");
        }

        var offset = (long)pgid * PageSize;
        var head = new byte[PageSize];
        if (RandomAccess.Read(_file, head, offset) != head.Length)
        {
            throw Bad($"page {pgid} is past the end of the file");
        }

        var id = BinaryPrimitives.ReadUInt64LittleEndian(head);
        if (id != pgid)
        {
            throw Bad($"page {pgid} says it is page {id}");
        }

        var overflow = BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(12));
        if (overflow == 0)
        {
            return head;
        }

        if (pgid + overflow >= PageCount)
        {
            throw Bad($"page {pgid} overflows past the last page");
        }

        var page = new byte[(long)PageSize * (overflow + 1)];
        if (RandomAccess.Read(_file, page, offset) != page.Length)
        {
            throw Bad($"page {pgid} is past the end of the file");
        }

        return page;
    }
}
