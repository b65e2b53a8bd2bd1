using System.Buffers.Binary;

namespace KvStore.Storage.Wal;

/// <summary>
/// Encodes one WAL record (the payload of one FasterLog entry), little-endian:
/// <code>
/// u32 crc32c(bytes 4..end) | u8 kind | body
/// kind 1 entry:     u64 index | u64 term | u8 type | data...
/// kind 2 hardstate: u64 term  | u64 vote | u64 commit
/// kind 3 snapshot:  u64 index | u64 term
/// kind 4 snapshot v2: u64 index | u64 term | u8 flags (bit 0: replaces log) | u32 n | n x u64 voter | u32 m | m x u64 learner
/// </code>
/// Kind 4 is written only for markers that carry a membership or replace the log, so logs without them stay
/// readable by older builds; every build reads kind 3.
/// </summary>
internal static class WalRecordCodec
{
    public const byte KindEntry = 1;
    public const byte KindHardState = 2;
    public const byte KindSnapshot = 3;
    public const byte KindSnapshotV2 = 4;

    public const int EntryHeaderSize = 4 + 1 + 8 + 8 + 1;
    public const int HardStateSize = 4 + 1 + 24;
    public const int SnapshotSize = 4 + 1 + 16;
    public const int SnapshotV2MinSize = 4 + 1 + 16 + 1 + 4 + 4;

    public static int SnapshotRecordSize(in WalSnapshotMarker marker) =>
        marker.IsExtended ? SnapshotV2MinSize + (8 * (marker.Voters.Count + marker.Learners.Count)) : SnapshotSize;

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
        dest[4] = marker.IsExtended ? KindSnapshotV2 : KindSnapshot;
        BinaryPrimitives.WriteUInt64LittleEndian(dest[5..], marker.Index);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[13..], marker.Term);
        if (!marker.IsExtended)
        {
            return Seal(dest[..SnapshotSize]);
        }

        dest[21] = marker.ReplacesLog ? (byte)1 : (byte)0;
        var p = 22;
        foreach (var list in (IReadOnlyList<ulong>[])[marker.Voters, marker.Learners])
        {
            BinaryPrimitives.WriteUInt32LittleEndian(dest[p..], (uint)list.Count);
            p += 4;
            foreach (var id in list)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(dest[p..], id);
                p += 8;
            }
        }

        return Seal(dest[..p]);
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
            KindSnapshotV2 => IsValidSnapshotV2(record),
            _ => false,
        };
    }

    private static bool IsValidSnapshotV2(ReadOnlySpan<byte> record)
    {
        if (record.Length < SnapshotV2MinSize || record[21] > 1)
        {
            return false;
        }

        var voters = (long)BinaryPrimitives.ReadUInt32LittleEndian(record[22..]);
        var learnersAt = 26 + (8 * voters);
        if (learnersAt + 4 > record.Length)
        {
            return false;
        }

        var learners = (long)BinaryPrimitives.ReadUInt32LittleEndian(record[(int)learnersAt..]);
        return record.Length == learnersAt + 4 + (8 * learners);
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

    /// <summary>Decodes kind 3 or kind 4 (checked by <see cref="IsValid"/>).</summary>
    public static WalSnapshotMarker DecodeSnapshot(ReadOnlySpan<byte> record)
    {
        var marker = new WalSnapshotMarker(
            BinaryPrimitives.ReadUInt64LittleEndian(record[5..]),
            BinaryPrimitives.ReadUInt64LittleEndian(record[13..]));
        if (record[4] != KindSnapshotV2)
        {
            return marker;
        }

        var p = 22;
        var lists = new ulong[2][];
        for (var l = 0; l < 2; l++)
        {
            var n = (int)BinaryPrimitives.ReadUInt32LittleEndian(record[p..]);
            p += 4;
            lists[l] = new ulong[n];
            for (var i = 0; i < n; i++)
            {
                lists[l][i] = BinaryPrimitives.ReadUInt64LittleEndian(record[p..]);
                p += 8;
            }
        }

        return marker with { ReplacesLog = record[21] == 1, Voters = lists[0], Learners = lists[1] };
    }
}
