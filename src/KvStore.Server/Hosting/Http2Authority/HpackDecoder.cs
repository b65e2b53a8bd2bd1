using System.Text;

namespace KvStore.Server.Hosting.Http2Authority;

/// <summary>How a decoded field was represented, so a re-encoding can keep "never indexed" (RFC 7541 §6.2.3).</summary>
internal enum HpackFieldKind : byte
{
    Indexed,
    IncrementalIndexing,
    WithoutIndexing,
    NeverIndexed,
}

/// <summary>One decoded header field; name and value point into a table entry, the block or the decoder's scratch.</summary>
internal readonly record struct HpackField(ArraySegment<byte> Name, ArraySegment<byte> Value, HpackFieldKind Kind);

/// <summary>Thrown for a header block that is not valid HPACK.</summary>
internal sealed class HpackDecodingException(string message) : Exception(message);

/// <summary>
/// An HPACK decoder (RFC 7541) that mirrors the peer encoder's dynamic table: static table, dynamic table with
/// eviction and size updates (bounded by the size this side advertised), prefixed integers, raw and Huffman strings.
/// Decoded fields stay valid until the next <see cref="Decode"/>.
/// </summary>
internal sealed class HpackDecoder
{
    private static readonly (byte[] Name, byte[] Value)[] StaticTable = BuildStaticTable();

    private readonly int _maxAllowedSize;
    private readonly List<HpackField> _fields = [];

    // Dynamic table as a ring: _entries[(_head + i) % length] is dynamic index i+1 (newest first).
    private (byte[] Name, byte[] Value)[] _entries = new (byte[], byte[])[16];
    private int _head;
    private int _count;
    private int _maxSize;
    private byte[] _scratch = new byte[256];

    /// <param name="maxAllowedSize">SETTINGS_HEADER_TABLE_SIZE this side advertised (the encoder's ceiling).</param>
    public HpackDecoder(int maxAllowedSize = 4096)
    {
        _maxAllowedSize = maxAllowedSize;
        _maxSize = maxAllowedSize;
    }

    /// <summary>The fields of the last decoded block.</summary>
    public IReadOnlyList<HpackField> Fields => _fields;

    /// <summary>Current dynamic table size in RFC 7541 §4.1 octets.</summary>
    public int DynamicTableSize { get; private set; }

    /// <summary>Dynamic table entries, newest first.</summary>
    public IEnumerable<(string Name, string Value)> DynamicTable()
    {
        for (var i = 0; i < _count; i++)
        {
            var (name, value) = _entries[(_head + i) % _entries.Length];
            yield return (Encoding.Latin1.GetString(name), Encoding.Latin1.GetString(value));
        }
    }

    /// <summary>Decodes one complete header block, applying its dynamic table changes.</summary>
    public IReadOnlyList<HpackField> Decode(byte[] block, int length)
    {
        _fields.Clear();
        var scratchNeeded = (length * 2) + 8; // Huffman output is at most 8/5 of its input
        if (_scratch.Length < scratchNeeded)
        {
            _scratch = new byte[Math.Max(scratchNeeded, _scratch.Length * 2)];
        }

        var scratchUsed = 0;
        var pos = 0;
        var sizeUpdateAllowed = true;
        while (pos < length)
        {
            var b = block[pos];
            if ((b & 0x80) != 0)
            {
                var index = ReadInteger(block, length, ref pos, 7);
                var (name, value) = Lookup(index);
                _fields.Add(new HpackField(name, value, HpackFieldKind.Indexed));
                sizeUpdateAllowed = false;
            }
            else if ((b & 0xC0) == 0x40)
            {
                var (name, value) = ReadLiteral(block, length, ref pos, 6, ref scratchUsed);
                _fields.Add(new HpackField(name, value, HpackFieldKind.IncrementalIndexing));

                // Table entries own whole arrays and are shared; bytes in the block or the scratch are copied.
                var nameBytes = name.Array == block || name.Array == _scratch ? name.ToArray() : name.Array!;
                Insert(nameBytes, value.ToArray());
                sizeUpdateAllowed = false;
            }
            else if ((b & 0xE0) == 0x20)
            {
                if (!sizeUpdateAllowed)
                {
                    throw new HpackDecodingException("dynamic table size update after a header field");
                }

                var size = ReadInteger(block, length, ref pos, 5);
                if (size > _maxAllowedSize)
                {
                    throw new HpackDecodingException($"dynamic table size update {size} above {_maxAllowedSize}");
                }

                _maxSize = size;
                Evict(0);
            }
            else
            {
                var kind = (b & 0xF0) == 0x10 ? HpackFieldKind.NeverIndexed : HpackFieldKind.WithoutIndexing;
                var (name, value) = ReadLiteral(block, length, ref pos, 4, ref scratchUsed);
                _fields.Add(new HpackField(name, value, kind));
                sizeUpdateAllowed = false;
            }
        }

        return _fields;
    }

    private (ArraySegment<byte> Name, ArraySegment<byte> Value) ReadLiteral(byte[] block, int length, ref int pos, int prefix, ref int scratchUsed)
    {
        var index = ReadInteger(block, length, ref pos, prefix);
        var name = index == 0 ? ReadString(block, length, ref pos, ref scratchUsed) : Lookup(index).Name;
        var value = ReadString(block, length, ref pos, ref scratchUsed);
        return (name, value);
    }

    private (ArraySegment<byte> Name, ArraySegment<byte> Value) Lookup(int index)
    {
        if (index <= 0)
        {
            throw new HpackDecodingException("header index 0");
        }

        if (index <= StaticTable.Length)
        {
            var (name, value) = StaticTable[index - 1];
            return (name, value);
        }

        var dynamic = index - StaticTable.Length - 1;
        if (dynamic >= _count)
        {
            throw new HpackDecodingException($"header index {index} beyond the dynamic table");
        }

        var entry = _entries[(_head + dynamic) % _entries.Length];
        return (entry.Name, entry.Value);
    }

    private ArraySegment<byte> ReadString(byte[] block, int length, ref int pos, ref int scratchUsed)
    {
        if (pos >= length)
        {
            throw new HpackDecodingException("truncated string");
        }

        var huffman = (block[pos] & 0x80) != 0;
        var len = ReadInteger(block, length, ref pos, 7);
        if (len > length - pos)
        {
            throw new HpackDecodingException("string longer than the block");
        }

        var start = pos;
        pos += len;
        if (!huffman)
        {
            return new ArraySegment<byte>(block, start, len);
        }

        var written = HpackHuffman.Decode(block.AsSpan(start, len), _scratch.AsSpan(scratchUsed));
        if (written < 0)
        {
            throw new HpackDecodingException("invalid Huffman string");
        }

        var result = new ArraySegment<byte>(_scratch, scratchUsed, written);
        scratchUsed += written;
        return result;
    }

    private static int ReadInteger(byte[] block, int length, ref int pos, int prefix)
    {
        if (pos >= length)
        {
            throw new HpackDecodingException("truncated integer");
        }

        var max = (1 << prefix) - 1;
        var value = block[pos++] & max;
        if (value < max)
        {
            return value;
        }

        var shift = 0;
        while (true)
        {
            if (pos >= length)
            {
                throw new HpackDecodingException("truncated integer");
            }

            var b = block[pos++];
            if (shift > 21)
            {
                throw new HpackDecodingException("integer too large");
            }

            value += (b & 0x7F) << shift;
            shift += 7;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }
    }

    private void Insert(byte[] name, byte[] value)
    {
        var size = name.Length + value.Length + 32;
        if (size > _maxSize)
        {
            // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
            Evict(_maxSize);
            return;
        }

        Evict(size);
        if (_count == _entries.Length)
        {
            var bigger = new (byte[], byte[])[_entries.Length * 2];
            for (var i = 0; i < _count; i++)
            {
                bigger[i] = _entries[(_head + i) % _entries.Length];
            }

            _entries = bigger;
            _head = 0;
        }

        _head = (_head - 1 + _entries.Length) % _entries.Length;
        _entries[_head] = (name, value);
        _count++;
        DynamicTableSize += size;
    }

    // Evicts oldest entries until `room` more octets fit under the maximum.
    private void Evict(int room)
    {
        while (_count > 0 && DynamicTableSize + room > _maxSize)
        {
            var last = (_head + _count - 1) % _entries.Length;
            var (name, value) = _entries[last];
            _entries[last] = default;
            DynamicTableSize -= name.Length + value.Length + 32;
            _count--;
        }
    }

    private static (byte[], byte[])[] BuildStaticTable()
    {
        string[] entries =
        [
            ":authority", "", ":method", "GET", ":method", "POST", ":path", "/", ":path", "/index.html",
            ":scheme", "http", ":scheme", "https", ":status", "200", ":status", "204", ":status", "206",
            ":status", "304", ":status", "400", ":status", "404", ":status", "500", "accept-charset", "",
            "accept-encoding", "gzip, deflate", "accept-language", "", "accept-ranges", "", "accept", "",
            "access-control-allow-origin", "", "age", "", "allow", "", "authorization", "", "cache-control", "",
            "content-disposition", "", "content-encoding", "", "content-language", "", "content-length", "",
            "content-location", "", "content-range", "", "content-type", "", "cookie", "", "date", "", "etag", "",
            "expect", "", "expires", "", "from", "", "host", "", "if-match", "", "if-modified-since", "",
            "if-none-match", "", "if-range", "", "if-unmodified-since", "", "last-modified", "", "link", "",
            "location", "", "max-forwards", "", "proxy-authenticate", "", "proxy-authorization", "", "range", "",
            "referer", "", "refresh", "", "retry-after", "", "server", "", "set-cookie", "",
            "strict-transport-security", "", "transfer-encoding", "", "user-agent", "", "vary", "", "via", "",
            "www-authenticate", "",
        ];
        var table = new (byte[], byte[])[entries.Length / 2];
        for (var i = 0; i < table.Length; i++)
        {
            table[i] = (Encoding.ASCII.GetBytes(entries[2 * i]), Encoding.ASCII.GetBytes(entries[(2 * i) + 1]));
        }

        return table;
    }
}
