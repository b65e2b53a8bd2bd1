namespace KvStore.Storage.Mvcc;

/// <summary>
/// mvccpb.KeyValue in protobuf wire format, written by hand in field order with default values omitted
/// (what Go's gogo-generated Marshal produces), so stored bytes and HashKV match etcd bit for bit:
/// 1 key (bytes, tag 0x0A), 2 create_revision (varint, 0x10), 3 mod_revision (0x18), 4 version (0x20),
/// 5 value (bytes, 0x2A), 6 lease (0x30).
/// </summary>
internal static class KeyValueCodec
{
    public static int MaxSize(int keyLength, int valueLength) => 1 + 5 + keyLength + (4 * 11) + 1 + 5 + valueLength;

    public static int Encode(Span<byte> dest, ReadOnlySpan<byte> key, long createRevision, long modRevision, long version, ReadOnlySpan<byte> value, long lease)
    {
        var p = 0;
        if (!key.IsEmpty)
        {
            dest[p++] = 0x0A;
            p += WriteVarint(dest[p..], (ulong)key.Length);
            key.CopyTo(dest[p..]);
            p += key.Length;
        }

        p += WriteField(dest[p..], 0x10, createRevision);
        p += WriteField(dest[p..], 0x18, modRevision);
        p += WriteField(dest[p..], 0x20, version);
        if (!value.IsEmpty)
        {
            dest[p++] = 0x2A;
            p += WriteVarint(dest[p..], (ulong)value.Length);
            value.CopyTo(dest[p..]);
            p += value.Length;
        }

        p += WriteField(dest[p..], 0x30, lease);
        return p;
    }

    private static int WriteField(Span<byte> dest, byte tag, long v)
    {
        if (v == 0)
        {
            return 0;
        }

        dest[0] = tag;
        return 1 + WriteVarint(dest[1..], (ulong)v);
    }

    private static int WriteVarint(Span<byte> dest, ulong v)
    {
        var i = 0;
        while (v >= 0x80)
        {
            dest[i++] = (byte)(v | 0x80);
            v >>= 7;
        }

        dest[i++] = (byte)v;
        return i;
    }

    public static KeyValue Decode(ReadOnlySpan<byte> data, bool keysOnly)
    {
        var kv = new KeyValue();
        var p = 0;
        while (p < data.Length)
        {
            var tag = data[p++];
            switch (tag)
            {
                case 0x0A:
                    kv.Key = ReadBytes(data, ref p).ToArray();
                    break;
                case 0x10:
                    kv.CreateRevision = (long)ReadVarint(data, ref p);
                    break;
                case 0x18:
                    kv.ModRevision = (long)ReadVarint(data, ref p);
                    break;
                case 0x20:
                    kv.Version = (long)ReadVarint(data, ref p);
                    break;
                case 0x2A:
                    var value = ReadBytes(data, ref p);
                    kv.Value = keysOnly ? [] : value.ToArray();
                    break;
                case 0x30:
                    kv.Lease = (long)ReadVarint(data, ref p);
                    break;
                default:
                    throw new InvalidDataException($"unexpected protobuf tag 0x{tag:X2} in stored KeyValue");
            }
        }

        return kv;
    }

    /// <summary>Only the key of an encoded KeyValue (field 1 comes first when present).</summary>
    public static ReadOnlySpan<byte> PeekKey(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty || data[0] != 0x0A)
        {
            return [];
        }

        var p = 1;
        var len = (int)ReadVarint(data, ref p);
        return data.Slice(p, len);
    }

    private static ReadOnlySpan<byte> ReadBytes(ReadOnlySpan<byte> data, scoped ref int p)
    {
        var len = (int)ReadVarint(data, ref p);
        var slice = data.Slice(p, len);
        p += len;
        return slice;
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int p)
    {
        ulong v = 0;
        var shift = 0;
        while (true)
        {
            var b = data[p++];
            v |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return v;
            }

            shift += 7;
        }
    }
}
