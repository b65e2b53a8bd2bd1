using System.Buffers.Binary;

namespace KvStore.Storage.Bolt;

/// <summary>
/// Writes a bbolt database file in one pass from sorted input (a bulk load): buckets in ascending name order, and in
/// each bucket keys in ascending byte order. Leaf pages are filled and written as the input arrives; only the first key
/// and page id of each written page are kept for the branch levels, so memory stays a small fraction of the file.
/// Pages 0 and 1 (meta) and 2 (an empty freelist) are written last by <see cref="Finish"/>, which is why the output
/// must be seekable. Every page is referenced exactly once, so bbolt's consistency check (and etcd's
/// <c>snapshot status</c>, which runs it) accepts the file. Layout in <see cref="BoltFormat"/>.
/// </summary>
public sealed class BoltWriter
{
    private const ulong FreelistPageId = 2;
    private const ulong FirstDataPage = 3;

    private readonly Stream _output;
    private readonly int _pageSize;
    private readonly TreeBuilder _root;
    private TreeBuilder? _bucket;
    private byte[]? _bucketName;
    private byte[]? _lastBucketName;
    private ulong _nextPage = FirstDataPage;
    private bool _finished;

    /// <summary>Creates a writer on an empty seekable stream.</summary>
    public BoltWriter(Stream output, int pageSize = BoltFormat.DefaultPageSize)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (!output.CanSeek || output.Length != 0)
        {
            throw new ArgumentException("the output must be an empty seekable stream", nameof(output));
        }

        _output = output;
        _pageSize = pageSize;
        _root = new TreeBuilder(this);
        _output.SetLength((long)FirstDataPage * pageSize);
        _output.Position = (long)FirstDataPage * pageSize;
    }

    /// <summary>Pages written so far (the high-water mark once finished).</summary>
    public ulong PageCount => _nextPage;

    /// <summary>Starts a top-level bucket; names must come in ascending byte order.</summary>
    public void BeginBucket(ReadOnlySpan<byte> name)
    {
        if (_bucket is not null || _finished)
        {
            throw new InvalidOperationException("a bucket is already open or the file is finished");
        }

        if (name.IsEmpty || (_lastBucketName is not null && name.SequenceCompareTo(_lastBucketName) <= 0))
        {
            throw new ArgumentException("bucket names must be non-empty and strictly ascending", nameof(name));
        }

        _bucketName = name.ToArray();
        _lastBucketName = _bucketName;
        _bucket = new TreeBuilder(this);
    }

    /// <summary>Adds a key to the open bucket; keys must be non-empty and strictly ascending.</summary>
    public void Put(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        var bucket = _bucket ?? throw new InvalidOperationException("no bucket is open");
        bucket.Add(key, value, 0);
    }

    /// <summary>Closes the open bucket: writes its last pages and its branch levels.</summary>
    public void EndBucket()
    {
        var bucket = _bucket ?? throw new InvalidOperationException("no bucket is open");
        var root = bucket.Finish();
        Span<byte> header = stackalloc byte[BoltFormat.BucketHeaderSize + BoltFormat.PageHeaderSize];
        header.Clear();
        if (root is { } pgid)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(header, pgid);
            _root.Add(_bucketName!, header[..BoltFormat.BucketHeaderSize], BoltFormat.BucketLeafFlag);
        }
        else
        {
            // An empty bucket is stored inline, as bbolt stores a new one: header with root 0, then an empty leaf page.
            BoltFormat.WritePageHeader(header[BoltFormat.BucketHeaderSize..], 0, BoltFormat.LeafPage, 0, 0);
            _root.Add(_bucketName!, header, BoltFormat.BucketLeafFlag);
        }

        _bucket = null;
        _bucketName = null;
    }

    /// <summary>Writes the root bucket, the freelist and both meta pages, and flushes. The file is then complete.</summary>
    public void Finish(ulong txid = 2)
    {
        if (_bucket is not null || _finished)
        {
            throw new InvalidOperationException("close the open bucket first; finish only once");
        }

        _finished = true;
        var root = _root.Finish() ?? WriteEmptyLeaf();
        var page = new byte[_pageSize];
        BoltFormat.WritePageHeader(page, FreelistPageId, BoltFormat.FreelistPage, 0, 0);
        WritePageAt(FreelistPageId, page);

        // bbolt writes transaction t's meta to page t % 2; page 0 holds the newer one, page 1 the one before.
        for (ulong id = 0; id < 2; id++)
        {
            Array.Clear(page);
            var metaTxid = id == 0 ? txid : txid - 1;
            BoltFormat.WritePageHeader(page, id, BoltFormat.MetaPage, 0, 0);
            var meta = page.AsSpan(BoltFormat.PageHeaderSize, BoltFormat.MetaSize);
            BinaryPrimitives.WriteUInt32LittleEndian(meta, BoltFormat.Magic);
            BinaryPrimitives.WriteUInt32LittleEndian(meta[4..], BoltFormat.Version);
            BinaryPrimitives.WriteUInt32LittleEndian(meta[8..], (uint)_pageSize);
            BinaryPrimitives.WriteUInt32LittleEndian(meta[12..], 0);
            BinaryPrimitives.WriteUInt64LittleEndian(meta[16..], root);
            BinaryPrimitives.WriteUInt64LittleEndian(meta[24..], 0);
            BinaryPrimitives.WriteUInt64LittleEndian(meta[32..], FreelistPageId);
            BinaryPrimitives.WriteUInt64LittleEndian(meta[40..], _nextPage);
            BinaryPrimitives.WriteUInt64LittleEndian(meta[48..], metaTxid);
            BinaryPrimitives.WriteUInt64LittleEndian(meta[56..], BoltFormat.Fnv1a64(meta[..56]));
            WritePageAt(id, page);
        }

        _output.Position = (long)_nextPage * _pageSize;
        _output.Flush();
    }

    private ulong WriteEmptyLeaf()
    {
        var page = new byte[_pageSize];
        var id = _nextPage++;
        BoltFormat.WritePageHeader(page, id, BoltFormat.LeafPage, 0, 0);
        _output.Write(page);
        return id;
    }

    private void WritePageAt(ulong id, byte[] page)
    {
        _output.Position = (long)id * _pageSize;
        _output.Write(page);
    }

    /// <summary>Appends a page image (a whole number of pages) at the end; returns its id.</summary>
    private ulong Append(byte[] image, int length)
    {
        var id = _nextPage;
        _nextPage += (ulong)(length / _pageSize);
        _output.Write(image, 0, length);
        return id;
    }

    /// <summary>
    /// One B+tree built bottom-up: a pending leaf page, then one list per branch level of (first key, page id) of the
    /// pages written on the level below.
    /// </summary>
    private sealed class TreeBuilder(BoltWriter writer)
    {
        private readonly PageBuilder _leaf = new(writer._pageSize, BoltFormat.LeafPage);
        private readonly List<(byte[] Key, ulong Page)> _children = [];
        private byte[] _lastKey = new byte[64];
        private int _lastKeyLength = -1;

        public void Add(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, uint flags)
        {
            if (key.IsEmpty || (_lastKeyLength >= 0 && key.SequenceCompareTo(_lastKey.AsSpan(0, _lastKeyLength)) <= 0))
            {
                throw new ArgumentException("keys must be non-empty and strictly ascending", nameof(key));
            }

            if (key.Length > _lastKey.Length)
            {
                _lastKey = new byte[key.Length];
            }

            key.CopyTo(_lastKey);
            _lastKeyLength = key.Length;
            if (!_leaf.Fits(key.Length + value.Length))
            {
                FlushLeaf();
            }

            _leaf.AddLeaf(key, value, flags);
        }

        /// <summary>Writes what is pending and the branch levels; the root page id, or null for an empty tree.</summary>
        public ulong? Finish()
        {
            if (_leaf.Count > 0)
            {
                FlushLeaf();
            }

            if (_children.Count == 0)
            {
                return null;
            }

            var level = _children;
            while (level.Count > 1)
            {
                var branch = new PageBuilder(writer._pageSize, BoltFormat.BranchPage);
                var next = new List<(byte[] Key, ulong Page)>();
                foreach (var (key, page) in level)
                {
                    if (!branch.Fits(key.Length))
                    {
                        next.Add(branch.Write(writer));
                    }

                    branch.AddBranch(key, page);
                }

                next.Add(branch.Write(writer));
                level = next;
            }

            return level[0].Page;
        }

        private void FlushLeaf() => _children.Add(_leaf.Write(writer));
    }

    /// <summary>The page being filled: elements first, then keys and values, as bbolt lays them out.</summary>
    private sealed class PageBuilder(int pageSize, ushort flags)
    {
        private readonly List<(uint Flags, int KeyLength, int ValueLength, ulong Child)> _elements = [];
        private readonly byte[] _image = new byte[pageSize];
        private byte[] _data = new byte[pageSize];
        private int _dataLength;
        private byte[]? _firstKey;

        public int Count => _elements.Count;

        /// <summary>Whether one more element of this many key+value bytes keeps the page within one page (an empty
        /// page takes anything: a big element makes an overflow page).</summary>
        public bool Fits(int payload) =>
            _elements.Count == 0 ||
            (BoltFormat.PageHeaderSize + ((_elements.Count + 1) * BoltFormat.ElementSize) + _dataLength + payload <= pageSize &&
             _elements.Count + 1 < ushort.MaxValue);

        public void AddLeaf(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, uint elementFlags)
        {
            Append(key, value);
            _elements.Add((elementFlags, key.Length, value.Length, 0));
        }

        public void AddBranch(byte[] key, ulong child)
        {
            Append(key, []);
            _elements.Add((0, key.Length, 0, child));
        }

        /// <summary>Writes the page (and its overflow pages), resets the builder; (first key, page id).</summary>
        public (byte[] Key, ulong Page) Write(BoltWriter writer)
        {
            var count = _elements.Count;
            var used = BoltFormat.PageHeaderSize + (count * BoltFormat.ElementSize) + _dataLength;
            var length = (used + pageSize - 1) / pageSize * pageSize;
            var image = length == pageSize ? _image : new byte[length];
            Array.Clear(image);
            var id = writer._nextPage;
            BoltFormat.WritePageHeader(image, id, flags, count, (uint)((length / pageSize) - 1));
            var dataStart = BoltFormat.PageHeaderSize + (count * BoltFormat.ElementSize);
            var offset = 0;
            for (var i = 0; i < count; i++)
            {
                var (elementFlags, keyLength, valueLength, child) = _elements[i];
                var element = image.AsSpan(BoltFormat.PageHeaderSize + (i * BoltFormat.ElementSize), BoltFormat.ElementSize);
                var pos = (uint)(dataStart + offset - (BoltFormat.PageHeaderSize + (i * BoltFormat.ElementSize)));
                if (flags == BoltFormat.LeafPage)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(element, elementFlags);
                    BinaryPrimitives.WriteUInt32LittleEndian(element[4..], pos);
                    BinaryPrimitives.WriteUInt32LittleEndian(element[8..], (uint)keyLength);
                    BinaryPrimitives.WriteUInt32LittleEndian(element[12..], (uint)valueLength);
                }
                else
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(element, pos);
                    BinaryPrimitives.WriteUInt32LittleEndian(element[4..], (uint)keyLength);
                    BinaryPrimitives.WriteUInt64LittleEndian(element[8..], child);
                }

                offset += keyLength + valueLength;
            }

            _data.AsSpan(0, _dataLength).CopyTo(image.AsSpan(dataStart));
            writer.Append(image, length);
            var first = _firstKey!;
            _elements.Clear();
            _dataLength = 0;
            _firstKey = null;
            return (first, id);
        }

        private void Append(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
        {
            _firstKey ??= key.ToArray();
            var need = _dataLength + key.Length + value.Length;
            if (need > _data.Length)
            {
                Array.Resize(ref _data, Math.Max(need, _data.Length * 2));
            }

            key.CopyTo(_data.AsSpan(_dataLength));
            value.CopyTo(_data.AsSpan(_dataLength + key.Length));
            _dataLength = need;
        }
    }
}
