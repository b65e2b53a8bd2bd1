using System.Buffers.Binary;
using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// Reads a stopped store's data log from its files before FasterKV recovers it, record by record over the range its
/// latest log checkpoint covers, and checks what FasterKV would otherwise trust blindly: each segment file is there and
/// long enough, each record's length fields keep it inside its page (FasterKV follows them with raw pointers, so a
/// damaged length crashes the process during recovery instead of failing it), and each live record's checksum holds.
/// Hands every valid record, in log order, to the caller's <see cref="ILogRecordSink"/> (the MVCC store rebuilds its key
/// index from them, so the open reads the log once), checks the paired index checkpoint's files against the checksums
/// recorded when it was taken (<see cref="IndexChecksums"/>), and returns the checkpoints FasterKV must recover: exactly
/// the log checkpoint checked here, and the index checkpoint it pairs with (FasterKV left to choose would list the
/// checkpoint directories again, ordered by their times, which a checkpoint being committed or purged can change in
/// between). Only when that index checkpoint has no recorded checksums (a crash right after FasterKV committed it) does
/// it also return each key's latest record (its length and checksum), for the open to compare with reads through the
/// recovered index.
/// Throws <see cref="InvalidDataException"/> naming the file and the address of the first damage.
/// </summary>
/// <remarks>
/// The record layout is FasterKV's for SpanByte keys and values: an 8-byte record header (previous address in the low
/// 48 bits, then lock, tombstone, valid and sealed bits), the key as a 4-byte length and its bytes, padded to 8 bytes,
/// then the value the same way; an all-zero header is unused space that FasterKV steps over 8 bytes at a time, which
/// in this store only ends a page.
/// </remarks>
internal static class DataLogCheck
{
    private const long PreviousAddressMask = (1L << 48) - 1;
    private const long TombstoneBit = 1L << 55;
    private const long ValidBit = 1L << 56;
    private const long SealedBit = 1L << 57;
    private const long UnusedBits = (1L << 58) | (1L << 60) | (1L << 63); // never set by this FasterKV version
    private const int UnserializedBit = 1 << 31;
    private const int LengthMask = 0x3FFF_FFFF;
    private const int HeaderLength = 8;

    /// <summary>Whether any log checkpoint listed under <paramref name="checkpointDir"/> has metadata that reads.</summary>
    public static bool HasReadableCheckpoint(string checkpointDir) => LatestCheckpoints(checkpointDir, []) is not null;

    public static CheckedLog Read(string checkpointDir, string dataFilePrefix, int pageBits, int segmentBits, ILogRecordSink? sink)
    {
        var skipped = new List<string>();
        if (LatestCheckpoints(checkpointDir, skipped) is not { } chosen)
        {
            throw new InvalidDataException(
                $"no FasterKV log checkpoint in '{checkpointDir}' has readable metadata: {(skipped.Count == 0 ? "none is listed" : string.Join("; ", skipped))}");
        }

        var (logToken, indexToken, begin, end) = chosen;
        var pageSize = 1 << pageBits;
        // An index checkpoint whose files match their recorded checksums needs no key-by-key comparison after recovery.
        var latest = indexToken != Guid.Empty && IndexChecksums.Verify(checkpointDir, indexToken)
            ? null
            : new Dictionary<byte[], LatestRecord>(ByteKeyComparer.Instance);
        var page = new byte[pageSize];
        FileStream? file = null;
        var fileSegment = -1L;
        try
        {
            for (var pageStart = begin & ~(pageSize - 1L); pageStart < end; pageStart += pageSize)
            {
                var segment = pageStart >> segmentBits;
                if (segment != fileSegment)
                {
                    file?.Dispose();
                    file = Open(dataFilePrefix, segment, checkpointDir);
                    fileSegment = segment;
                }

                var length = (int)Math.Min(pageSize, end - pageStart);
                var offsetInFile = pageStart & ((1L << segmentBits) - 1);
                file!.Position = offsetInFile;
                if (file.ReadAtLeast(page.AsSpan(0, length), length, throwOnEndOfStream: false) < length)
                {
                    throw new InvalidDataException(
                        $"FasterKV log file '{file.Name}' is {file.Length} bytes, but the checkpoint in '{checkpointDir}' needs its first {offsetInFile + length} bytes (log tail at address {end})");
                }

                // FasterKV walks a page it reads back from its first byte; the log's first bytes hold no record.
                var first = (int)Math.Max(begin - pageStart, 0);
                if (page.AsSpan(0, first).IndexOfAnyExcept((byte)0) is var stray and >= 0)
                {
                    throw Damaged(file.Name, pageStart + stray, "bytes before the log's first record are not zero");
                }

                ReadPage(page, pageSize, first, length, pageStart, file.Name, latest, sink);
                if (length < pageSize)
                {
                    ClearPastTail(file, offsetInFile + length, pageSize - length);
                }
            }
        }
        finally
        {
            file?.Dispose();
        }

        return new CheckedLog(latest, logToken, indexToken);
    }

    /// <summary>
    /// FasterKV walks the whole last page when it reads it back, also past the checkpoint's tail, where the file may
    /// hold writes made after the checkpoint (torn by a power cut) or damage. Those bytes are not part of the
    /// recovered state and FasterKV writes over them when it appends, so they are zeroed here.
    /// </summary>
    private static void ClearPastTail(FileStream file, long from, int count)
    {
        var available = (int)Math.Clamp(file.Length - from, 0, count);
        if (available == 0)
        {
            return;
        }

        var bytes = new byte[available];
        file.Position = from;
        file.ReadExactly(bytes);
        if (!bytes.AsSpan().ContainsAnyExcept((byte)0))
        {
            return;
        }

        Array.Clear(bytes);
        file.Position = from;
        file.Write(bytes);
        file.Flush(flushToDisk: true);
    }

    private static FileStream Open(string prefix, long segment, string checkpointDir)
    {
        var path = $"{prefix}.{segment}";
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"FasterKV log file '{path}' is missing, but the checkpoint in '{checkpointDir}' needs it");
        }

        return new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1 << 16);
    }

    private static void ReadPage(byte[] page, int pageSize, int offset, int used, long pageStart, string file, Dictionary<byte[], LatestRecord>? latest, ILogRecordSink? sink)
    {
        while (offset < used)
        {
            var header = BinaryPrimitives.ReadInt64LittleEndian(page.AsSpan(offset));
            if (header == 0)
            {
                // Records never shrink in place (AppendOnlyFunctions): unused space only ends a page.
                var rest = page.AsSpan(offset, used - offset);
                var nonZero = rest.IndexOfAnyExcept((byte)0);
                if (nonZero >= 0)
                {
                    throw Damaged(file, pageStart + offset, $"a zeroed record header is followed by data at address {pageStart + offset + nonZero}");
                }

                return;
            }

            if ((header & UnusedBits) != 0 || (header & PreviousAddressMask) >= pageStart + offset)
            {
                throw Damaged(file, pageStart + offset, $"the record header {header:x16} is not one this store writes");
            }

            var keyLength = LengthAt(page, pageSize, offset + HeaderLength, pageStart, file);
            var valueAt = offset + HeaderLength + Align(sizeof(int) + keyLength);
            var valueLength = LengthAt(page, pageSize, valueAt, pageStart, file);
            var recordEnd = valueAt + Align(sizeof(int) + valueLength);
            if (recordEnd > pageSize)
            {
                throw Damaged(file, pageStart + offset, $"its length fields ({keyLength}-byte key, {valueLength}-byte value) run past the end of its page");
            }

            // Closed records (invalid or sealed) are skipped by FasterKV's own scan and reads.
            if ((header & (ValidBit | SealedBit)) == ValidBit)
            {
                var key = page.AsSpan(offset + HeaderLength + sizeof(int), keyLength);
                if ((header & TombstoneBit) != 0)
                {
                    // Deletes always append a tombstone without a value; a put's record has its checksum after it.
                    if (valueLength != 0)
                    {
                        throw Damaged(file, pageStart + offset, $"the deletion of key {Convert.ToHexString(key[..Math.Min(key.Length, 32)])} carries a {valueLength}-byte value");
                    }

                    latest?[key.ToArray()] = LatestRecord.Deletion;
                    sink?.Deleted(key);
                }
                else
                {
                    var stored = page.AsSpan(valueAt + sizeof(int), valueLength);
                    if (!FasterBackend.TryStripChecksum(key, stored, out var value))
                    {
                        throw Damaged(file, pageStart + offset, $"the record of key {Convert.ToHexString(key[..Math.Min(key.Length, 32)])} fails its checksum");
                    }

                    latest?[key.ToArray()] = new LatestRecord(value.Length, BinaryPrimitives.ReadUInt32LittleEndian(stored[^FasterBackend.ChecksumLength..]));
                    sink?.Record(key, value);
                }
            }

            offset = recordEnd;
        }
    }

    /// <summary>A serialized SpanByte length at <paramref name="at"/>, which must lie inside the page.</summary>
    private static int LengthAt(byte[] page, int pageSize, int at, long pageStart, string file)
    {
        if (at + sizeof(int) > pageSize)
        {
            throw Damaged(file, pageStart + at, "a record's length field runs past the end of its page");
        }

        var raw = BinaryPrimitives.ReadInt32LittleEndian(page.AsSpan(at));
        if ((raw & UnserializedBit) != 0)
        {
            throw Damaged(file, pageStart + at, "a record's length field is not that of a stored record");
        }

        return raw & LengthMask;
    }

    private static int Align(int length) => (length + 7) & ~7;

    private static InvalidDataException Damaged(string file, long address, string what) =>
        new($"FasterKV log file '{file}' is damaged at log address {address}: {what}");

    /// <summary>
    /// The log checkpoint to recover — the first one listed whose metadata reads, as FasterKV chooses when asked for the
    /// latest — with its begin and end addresses, and the first index checkpoint listed whose metadata reads and that
    /// ended at or before that log checkpoint's end (FasterKV's pairing rule; none: FasterKV replays the whole log).
    /// Adds each metadata file skipped before it, with why, to <paramref name="skipped"/>.
    /// </summary>
    private static (Guid Log, Guid Index, long Begin, long End)? LatestCheckpoints(string checkpointDir, List<string> skipped)
    {
        using var manager = CheckpointFiles.OpenManager(checkpointDir);
        foreach (var token in manager.GetLogCheckpointTokens())
        {
            HybridLogRecoveryInfo info;
            try
            {
                var metadata = manager.GetLogCheckpointMetadata(token, null, false, -1);
                info = default;
                using var reader = new StreamReader(new MemoryStream(metadata));
                info.Initialize(reader);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // FasterKV skips a checkpoint whose metadata does not read, and so does this check (named if none reads).
                skipped.Add($"'{MetadataFile(checkpointDir, token)}' ({e.GetType().Name}: {e.Message})");
                continue;
            }

            return (token, PairedIndexCheckpoint(manager, info.finalLogicalAddress), info.beginAddress, info.finalLogicalAddress);
        }

        return null;
    }

    private static string MetadataFile(string checkpointDir, Guid token)
    {
        var file = new DefaultCheckpointNamingScheme(checkpointDir).LogCheckpointMetadata(token);
        return Path.Combine(checkpointDir, file.directoryName, file.fileName) + ".0"; // a local device's first segment file
    }

    private static Guid PairedIndexCheckpoint(DeviceLogCommitCheckpointManager manager, long logEnd)
    {
        foreach (var token in manager.GetIndexCheckpointTokens())
        {
            try
            {
                // FasterKV's index metadata is text, one field per line; the ninth is the log address it ended at.
                using var reader = new StreamReader(new MemoryStream(manager.GetIndexCheckpointMetadata(token)));
                var lines = Enumerable.Range(0, 9).Select(_ => reader.ReadLine()).ToArray();
                if (long.Parse(lines[8]!, System.Globalization.CultureInfo.InvariantCulture) <= logEnd)
                {
                    return token;
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Unreadable: skipped, as FasterKV does.
            }
        }

        return Guid.Empty;
    }
}

/// <summary>
/// What <see cref="DataLogCheck.Read"/> checked: the checkpoints to recover, and every key's latest record when the
/// index checkpoint could not be checked by its recorded checksums (null when it was).
/// </summary>
internal sealed record CheckedLog(Dictionary<byte[], LatestRecord>? Latest, Guid LogToken, Guid IndexToken);

/// <summary>A key's latest record in the log: the length and stored checksum of its value, or a deletion (length -1).</summary>
internal readonly record struct LatestRecord(int Length, uint Checksum)
{
    public static LatestRecord Deletion => new(-1, 0);

    public bool IsDeletion => Length < 0;
}

/// <summary>Receives the valid records of the checked log in log order (the last one of a key is its current state).</summary>
internal interface ILogRecordSink
{
    /// <summary>A put: the value without its checksum (which held). The spans are valid during the call only.</summary>
    void Record(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value);

    /// <summary>A deletion of key.</summary>
    void Deleted(ReadOnlySpan<byte> key);
}
