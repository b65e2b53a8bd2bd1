using System.Buffers.Binary;

namespace KvStore.Storage.Bolt;

/// <summary>
/// The on-disk layout of a bbolt database file, as far as we read and write it (little-endian, page size 4096 when
/// we write). Every page starts with a 16-byte header: u64 page id, u16 flags, u16 element count, u32 overflow (how
/// many further pages the page spans). Pages 0 and 1 are the two meta pages; the one with the higher transaction id
/// that passes its checksum is current. Each bucket is a B+tree of branch and leaf pages; the root bucket (whose root
/// page the meta names) maps bucket names to 16-byte bucket headers (root page id, sequence). A bucket whose header
/// names root page 0 is <em>inline</em>: its single leaf page follows the header inside the parent's value.
/// </summary>
public static class BoltFormat
{
    /// <summary>The page size we write (etcd's on x86-64 Linux).</summary>
    public const int DefaultPageSize = 4096;

    /// <summary>Bytes of a page header.</summary>
    public const int PageHeaderSize = 16;

    /// <summary>Bytes of a branch or leaf element.</summary>
    public const int ElementSize = 16;

    /// <summary>Bytes of a bucket header (u64 root page, u64 sequence).</summary>
    public const int BucketHeaderSize = 16;

    /// <summary>Bytes of the meta record after the page header; the last 8 are its FNV-1a 64 checksum.</summary>
    public const int MetaSize = 64;

    /// <summary>Page flags.</summary>
    public const ushort BranchPage = 0x01;

    /// <summary>Leaf page flag.</summary>
    public const ushort LeafPage = 0x02;

    /// <summary>Meta page flag.</summary>
    public const ushort MetaPage = 0x04;

    /// <summary>Freelist page flag.</summary>
    public const ushort FreelistPage = 0x10;

    /// <summary>Leaf element flag: the value is a nested bucket.</summary>
    public const uint BucketLeafFlag = 0x01;

    /// <summary>bbolt's magic number.</summary>
    public const uint Magic = 0xED0CDAED;

    /// <summary>bbolt's data format version.</summary>
    public const uint Version = 2;

    /// <summary>Freelist page id meaning "not persisted" (bbolt rebuilds it by scanning).</summary>
    public const ulong NoFreelist = ulong.MaxValue;

    /// <summary>Writes a page header.</summary>
    public static void WritePageHeader(Span<byte> page, ulong id, ushort flags, int count, uint overflow)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(page, id);
        BinaryPrimitives.WriteUInt16LittleEndian(page[8..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(page[10..], checked((ushort)count));
        BinaryPrimitives.WriteUInt32LittleEndian(page[12..], overflow);
    }

    /// <summary>FNV-1a 64-bit hash (bbolt's meta checksum).</summary>
    public static ulong Fnv1a64(ReadOnlySpan<byte> data)
    {
        var hash = 0xcbf29ce484222325UL;
        foreach (var b in data)
        {
            hash ^= b;
            hash *= 0x100000001b3UL;
        }

        return hash;
    }
}
