using System.Buffers.Binary;

namespace KvStore.Storage.Wal;

/// <summary>
/// Reads the WAL segment files directly, without FasterLog, to decide before FasterLog recovers whether the tail is
/// intact. FasterLog's own fast-commit recovery cannot be trusted with a damaged tail: a cut-short commit record
/// makes it recover to addresses read from the torn bytes, or its iterator throws on it later.
/// <para>
/// Physical layout (FasterLog without per-entry checksums): pages of 2^<see cref="WriteAheadLog.PageSizeBits"/>
/// bytes, a record never crosses a page, so every page starts at a record boundary (the log starts at address 64).
/// A record is an i32 length then the payload padded to 4 bytes; a positive length is one of our records (checked
/// with its CRC-32C), a negative one a FasterLog commit record; a zero length ends the page's data, and at a page
/// start it ends the log. We check a commit record against the one form we write (version 1, no iterators, no
/// cookie, checksum = begin ^ until ^ commit number ^ iterator count ^ cookie length).
/// </para>
/// </summary>
internal sealed class WalPhysicalScan
{
    internal const long FirstAddress = 64;
    private const int CommitPayloadSize = 4 + 8 + 8 + 8 + 8 + 4 + 4;

    /// <summary>The smallest unit a disk writes atomically; a larger physical sector tears into whole runs of these.</summary>
    private const int TearSector = 512;

    private static readonly long PageSize = 1L << WriteAheadLog.PageSizeBits;

    private long _breakRecordEnd = -1;

    private WalPhysicalScan()
    {
    }

    /// <summary>Our records that passed their checksum, in log order, before <see cref="BreakAddress"/>.</summary>
    public List<(long Address, byte[] Record)> Records { get; } = [];

    /// <summary>Address of the first damaged record (bad framing, bad checksum, torn commit record), or -1.</summary>
    public long BreakAddress { get; private set; } = -1;

    /// <summary>Why the record at <see cref="BreakAddress"/> is bad.</summary>
    public string BreakReason { get; private set; } = "";

    /// <summary>Address of a checksum-valid record after <see cref="BreakAddress"/> (the damage is not a tail), or -1.</summary>
    public long ValidAfterBreak { get; private set; } = -1;

    /// <summary>
    /// Intact commit records after <see cref="BreakAddress"/>, counted up to 2. A power cut damages only writes that
    /// were in flight, and a commit is acknowledged only once everything before it is written, so no commit after a
    /// tear was acknowledged. One commit write is in flight at a time, and it may tear anywhere, including before its
    /// own commit record, which can still reach the disk intact: one intact commit after the damage can be a torn last
    /// write. Two or more mean the damage sits in data that a later completed commit had made durable: corruption.
    /// </summary>
    public int CommitsAfterBreak { get; private set; }

    /// <summary>Whether the damaged record at <see cref="BreakAddress"/> holds a sector that was never written (see <see cref="LooksTorn"/>).</summary>
    public bool BreakLooksTorn { get; private set; }

    /// <summary>
    /// True when the damage can only be a power cut's tear of the last write, which was never acknowledged: no
    /// intact commit after it, or exactly one (the torn write's own) and the damaged record shows an unwritten sector.
    /// </summary>
    public bool DamageIsTornLastWrite => BreakAddress >= 0 && (CommitsAfterBreak == 0 || (CommitsAfterBreak == 1 && BreakLooksTorn));

    /// <summary>Address of the first intact commit record after <see cref="BreakAddress"/>, or -1.</summary>
    public long FirstCommitAfterBreak { get; private set; } = -1;

    /// <summary>End of the last intact commit record (FasterLog's durable point), or -1 when there is none.</summary>
    public long LastCommitEnd { get; private set; } = -1;

    /// <summary>Begin address recorded by the last intact commit record, or -1.</summary>
    public long CommitBeginAddress { get; private set; } = -1;

    /// <summary>End of the last well-formed record (commit or ours) before any damage.</summary>
    public long WellFormedEnd { get; private set; } = FirstAddress;

    /// <summary>Address just past the last non-zero byte in the segment files.</summary>
    public long DataEnd { get; private set; }

    /// <summary>Address the walk started at (the lowest segment file's start).</summary>
    public long StartAddress { get; private set; } = FirstAddress;

    /// <summary>
    /// True when FasterLog can recover the files as they are: no damage, and the data ends with an intact commit
    /// record (nothing written after the last durable commit point), or there is no data at all.
    /// </summary>
    public bool IsClean => BreakAddress < 0 && (DataEnd <= StartAddress || (LastCommitEnd >= 0 && DataEnd <= LastCommitEnd));

    public static WalPhysicalScan Run(string directory, string logFileName, int segmentSizeBits)
    {
        var scan = new WalPhysicalScan();
        var segments = SegmentFiles(directory, logFileName);
        if (segments.Count == 0)
        {
            scan.DataEnd = FirstAddress;
            return scan;
        }

        var reader = new SegmentReader(segments, segmentSizeBits);
        scan.StartAddress = Math.Max(FirstAddress, segments.Keys.Min() << segmentSizeBits);
        scan.DataEnd = reader.DataEnd();
        scan.Walk(reader);
        return scan;
    }

    private static SortedDictionary<long, string> SegmentFiles(string directory, string logFileName)
    {
        var files = new SortedDictionary<long, string>();
        if (!Directory.Exists(directory))
        {
            return files;
        }

        foreach (var path in Directory.EnumerateFiles(directory, logFileName + ".*"))
        {
            if (long.TryParse(Path.GetFileName(path)[(logFileName.Length + 1)..], out var n) && n >= 0)
            {
                files[n] = path;
            }
        }

        return files;
    }

    private void Walk(SegmentReader reader)
    {
        var address = StartAddress;
        WellFormedEnd = address;
        var header = new byte[4];
        while (address < DataEnd)
        {
            var inPage = address & (PageSize - 1);
            if (inPage + 4 > PageSize)
            {
                address = NextPage(address);
                continue;
            }

            if (!reader.Read(address, header))
            {
                Break(address, "record header missing");
                break;
            }

            var length = BinaryPrimitives.ReadInt32LittleEndian(header);
            if (length == 0)
            {
                if (inPage == 0 || (address == FirstAddress && inPage == FirstAddress))
                {
                    // An empty page: the log ends here (anything later is checked as damage below).
                    Break(address, "empty page before later data");
                    break;
                }

                if (!RestOfPageIsZero(reader, address))
                {
                    Break(address, "non-zero bytes after the end of the page's records");
                    break;
                }

                address = NextPage(address);
                continue;
            }

            var isCommit = length < 0;
            var payloadLength = isCommit ? (length == int.MinValue ? int.MaxValue : -length) : length;
            var size = 4L + ((payloadLength + 3L) & ~3L);
            if (inPage + size > PageSize)
            {
                Break(address, $"record length {length} crosses the page end");
                break;
            }

            var payload = new byte[payloadLength];
            if (!reader.Read(address + 4, payload))
            {
                Break(address, isCommit ? "commit record cut short" : "record cut short");
                break;
            }

            if (isCommit)
            {
                if (!IsIntactCommit(payload, address + size, out var begin))
                {
                    Break(address, "commit record incomplete or fails its checksum", address + size);
                    break;
                }

                LastCommitEnd = address + size;
                CommitBeginAddress = begin;
            }
            else
            {
                if (!WalRecordCodec.IsValid(payload))
                {
                    Break(address, "checksum mismatch", address + size);
                    break;
                }

                Records.Add((address, payload));
            }

            address += size;
            WellFormedEnd = address;
        }

        if (BreakAddress >= 0)
        {
            ValidAfterBreak = FindValidRecord(reader, BreakAddress + 4);
            CountIntactCommits(reader, BreakAddress + 4);
            BreakLooksTorn = LooksTorn(reader, BreakAddress, Math.Min(_breakRecordEnd, DataEnd));
            if (ValidAfterBreak < 0 && BreakReason == "empty page before later data")
            {
                // Zeros up to the end of the data with nothing valid in them: a plain end of log with junk after it.
                BreakReason = "unreadable bytes after the end of the log";
            }
        }
    }

    private bool RestOfPageIsZero(SegmentReader reader, long address)
    {
        var end = Math.Min(NextPage(address), DataEnd);
        var chunk = new byte[4096];
        while (address < end)
        {
            var n = (int)Math.Min(chunk.Length, end - address);
            if (!reader.Read(address, chunk.AsSpan(0, n)))
            {
                return true; // past the file's end: nothing there
            }

            if (chunk.AsSpan(0, n).ContainsAnyExcept((byte)0))
            {
                return false;
            }

            address += n;
        }

        return true;
    }

    private void Break(long address, string reason, long recordEnd = -1)
    {
        BreakAddress = address;
        BreakReason = reason;
        _breakRecordEnd = Math.Max(recordEnd, address + 1);
    }

    /// <summary>
    /// Whether the damaged record shows what a torn write leaves: a disk writes whole sectors, and a sector of the
    /// torn write that never reached the disk still holds what it held before, zeros (segments are never
    /// preallocated or reused), or, for the sector the write began in, the durable bytes before the record and zeros
    /// from the record on. So a run of zeros from the record's start to a sector boundary, or a whole zero sector
    /// starting inside the record. A flipped or overwritten byte in written data shows neither.
    /// </summary>
    private static bool LooksTorn(SegmentReader reader, long recordStart, long recordEnd)
    {
        var firstBoundary = (recordStart | (TearSector - 1)) + 1;
        if (reader.IsZero(recordStart, (int)(firstBoundary - recordStart)))
        {
            return true;
        }

        for (var sector = firstBoundary; sector < recordEnd; sector += TearSector)
        {
            if (reader.IsZero(sector, TearSector))
            {
                return true;
            }
        }

        return false;
    }

    private static long NextPage(long address) => (address | (PageSize - 1)) + 1;

    /// <summary>
    /// The commit record form FasterLog 2.x writes for us: i32 version 1, i64 checksum, i64 begin, i64 until,
    /// i64 commit number, i32 iterator count 0, i32 cookie length -1. Its until address is the end of the record.
    /// </summary>
    private static bool IsIntactCommit(ReadOnlySpan<byte> payload, long recordEnd, out long begin)
    {
        begin = -1;
        if (payload.Length != CommitPayloadSize || BinaryPrimitives.ReadInt32LittleEndian(payload) != 1)
        {
            return false;
        }

        var checksum = BinaryPrimitives.ReadInt64LittleEndian(payload[4..]);
        var b = BinaryPrimitives.ReadInt64LittleEndian(payload[12..]);
        var until = BinaryPrimitives.ReadInt64LittleEndian(payload[20..]);
        var number = BinaryPrimitives.ReadInt64LittleEndian(payload[28..]);
        var iterators = BinaryPrimitives.ReadInt32LittleEndian(payload[36..]);
        var cookieLength = BinaryPrimitives.ReadInt32LittleEndian(payload[40..]);
        if (iterators != 0 || cookieLength != -1 || checksum != (b ^ until ^ number ^ iterators ^ cookieLength))
        {
            return false;
        }

        if (until != recordEnd || b < FirstAddress || b > until)
        {
            return false;
        }

        begin = b;
        return true;
    }

    /// <summary>
    /// Counts (up to 2) intact commit records at any 4-byte aligned address from <paramref name="from"/> to the end of
    /// the data. A commit record is a strong pattern: a fixed negative length, version 1, its own checksum, and an
    /// until address equal to where the record ends.
    /// </summary>
    private void CountIntactCommits(SegmentReader reader, long from)
    {
        const int recordSize = 4 + CommitPayloadSize;
        var address = (from + 3) & ~3L;
        var header = new byte[4];
        var payload = new byte[CommitPayloadSize];
        while (address + recordSize <= DataEnd && CommitsAfterBreak < 2)
        {
            if ((address & (PageSize - 1)) + recordSize <= PageSize
                && reader.Read(address, header)
                && BinaryPrimitives.ReadInt32LittleEndian(header) == -CommitPayloadSize
                && reader.Read(address + 4, payload)
                && IsIntactCommit(payload, address + recordSize, out _))
            {
                if (CommitsAfterBreak++ == 0)
                {
                    FirstCommitAfterBreak = address;
                }

                address += recordSize;
                continue;
            }

            address += 4;
        }
    }

    /// <summary>
    /// Looks for one of our records (positive length, payload passing its CRC-32C) at any 4-byte aligned address from
    /// <paramref name="from"/> to the end of the data; framing is lost after damage, so every position is tried.
    /// </summary>
    private long FindValidRecord(SegmentReader reader, long from)
    {
        var address = (from + 3) & ~3L;
        var header = new byte[4];
        while (address + 4 + 5 <= DataEnd)
        {
            if (reader.Read(address, header))
            {
                var length = BinaryPrimitives.ReadInt32LittleEndian(header);
                var inPage = address & (PageSize - 1);
                if (length >= 5 && inPage + 4 + length <= PageSize && address + 4 + length <= DataEnd)
                {
                    var payload = new byte[length];
                    if (reader.Read(address + 4, payload) && WalRecordCodec.IsValid(payload))
                    {
                        return address;
                    }
                }
            }

            address += 4;
        }

        return -1;
    }

    /// <summary>Random access over the segment files by log address, one page cached.</summary>
    private sealed class SegmentReader(SortedDictionary<long, string> segments, int segmentSizeBits)
    {
        private readonly Dictionary<long, long> _lengths = segments.ToDictionary(s => s.Key, s => new FileInfo(s.Value).Length);
        private long _page = -1;
        private byte[] _buffer = [];
        private int _valid;

        /// <summary>Fills <paramref name="dest"/> from <paramref name="address"/> (within one page); false when past a file's end.</summary>
        public bool Read(long address, Span<byte> dest)
        {
            var page = address >> WriteAheadLog.PageSizeBits;
            if (page != _page)
            {
                Load(page);
            }

            var offset = (int)(address & (PageSize - 1));
            if (offset + dest.Length > _valid)
            {
                return false;
            }

            _buffer.AsSpan(offset, dest.Length).CopyTo(dest);
            return true;
        }

        private void Load(long page)
        {
            _page = page;
            _valid = 0;
            var pageStart = page << WriteAheadLog.PageSizeBits;
            var segment = pageStart >> segmentSizeBits;
            if (!segments.TryGetValue(segment, out var path))
            {
                return;
            }

            var fileOffset = pageStart & ((1L << segmentSizeBits) - 1);
            var available = (int)Math.Clamp(_lengths[segment] - fileOffset, 0, PageSize);
            if (_buffer.Length < available)
            {
                _buffer = new byte[PageSize];
            }

            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            var read = 0;
            while (read < available)
            {
                var n = RandomAccess.Read(handle, _buffer.AsSpan(read, available - read), fileOffset + read);
                if (n <= 0)
                {
                    break;
                }

                read += n;
            }

            _valid = read;
        }

        /// <summary>Whether <paramref name="length"/> bytes from <paramref name="address"/> (within one page) are zero; bytes past a file's end count as zero.</summary>
        public bool IsZero(long address, int length)
        {
            var page = address >> WriteAheadLog.PageSizeBits;
            if (page != _page)
            {
                Load(page);
            }

            var offset = (int)(address & (PageSize - 1));
            var present = Math.Clamp(_valid - offset, 0, length);
            return present == 0 || !_buffer.AsSpan(offset, present).ContainsAnyExcept((byte)0);
        }

        /// <summary>Log address just past the last non-zero byte of the highest segment file that has data.</summary>
        public long DataEnd()
        {
            foreach (var (segment, path) in segments.Reverse())
            {
                using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                var buffer = new byte[1 << 16];
                var pos = _lengths[segment];
                while (pos > 0)
                {
                    var n = (int)Math.Min(buffer.Length, pos);
                    pos -= n;
                    var got = RandomAccess.Read(handle, buffer.AsSpan(0, n), pos);
                    for (var i = got - 1; i >= 0; i--)
                    {
                        if (buffer[i] != 0)
                        {
                            return (segment << segmentSizeBits) + pos + i + 1;
                        }
                    }
                }
            }

            return FirstAddress;
        }
    }
}
