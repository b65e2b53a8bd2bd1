using System.Buffers.Binary;

namespace KvStore.Storage.Wal;

/// <summary>
/// Encodes one WAL record (the payload of one FasterLog entry), little-endian:
/// <code>
/// u32 crc32c(bytes 4..end) | u8 kind | body
/// kind 1 entry:     u64 index | u64 term | u8 type | data...
/// kind 2 hardstate: u64 term  | u64 vote | u64 commit
/// kind 3 snapshot:  u64 index | u64 term
/// </code>
/// </summary>
internal static class WalRecordCodec
{
    public const byte KindEntry = 1;
    public const byte KindHardState = 2;
    public const byte KindSnapshot = 3;

    public const int EntryHeaderSize = 4 + 1 + 8 + 8 + 1;
    public const int HardStateSize = 4 + 1 + 24;
    public const int SnapshotSize = 4 + 1 + 16;

    public static int EncodeEntry(in WalEntry entry, Span<byte> dest)
    {
        dest[4] = KindEntry;
        BinaryPrimitives.WriteUInt64LittleEndian(dest[5..], entry.Index);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[13..], entry.Term);
        dest[21] = entry.Type;
        entry.Data.Span.CopyTo(dest[EntryHeaderSize..]);
        return Seal(dest[..(EntryHeaderSize + entry.Data.Length)]);
    }

    public static int EncodeHardState(in WalHardState state, Span<byte> dest)
    {
        dest[4] = KindHardState;
        BinaryPrimitives.WriteUInt64LittleEndian(dest[5..], state.Term);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[13..], state.Vote);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[21..], state.Commit);
        return Seal(dest[..HardStateSize]);
    }

    public static int EncodeSnapshot(in WalSnapshotMarker marker, Span<byte> dest)
    {
        dest[4] = KindSnapshot;
        BinaryPrimitives.WriteUInt64LittleEndian(dest[5..], marker.Index);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[13..], marker.Term);
        return Seal(dest[..SnapshotSize]);
    }

    private static int Seal(Span<byte> record)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(record, Crc32C.Compute(record[4..]));
        return record.Length;
    }

    /// <summary>True when the checksum matches and the kind/length are well-formed.</summary>
    public static bool IsValid(ReadOnlySpan<byte> record)
    {
        if (record.Length < 5)
        {
            return false;
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(record) != Crc32C.Compute(record[4..]))
        {
            return false;
        }

        return record[4] switch
        {
            KindEntry => record.Length >= EntryHeaderSize,
            KindHardState => record.Length == HardStateSize,
            KindSnapshot => record.Length == SnapshotSize,
            _ => false,
        };
    }

    public static WalEntry DecodeEntry(ReadOnlySpan<byte> record) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(record[5..]),
        BinaryPrimitives.ReadUInt64LittleEndian(record[13..]),
        record[21],
        record[EntryHeaderSize..].ToArray());

    public static WalHardState DecodeHardState(ReadOnlySpan<byte> record) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(record[5..]),
        BinaryPrimitives.ReadUInt64LittleEndian(record[13..]),
        BinaryPrimitives.ReadUInt64LittleEndian(record[21..]));

    public static WalSnapshotMarker DecodeSnapshot(ReadOnlySpan<byte> record) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(record[5..]),
        BinaryPrimitives.ReadUInt64LittleEndian(record[13..]));
}
