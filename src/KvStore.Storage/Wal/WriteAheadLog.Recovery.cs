using Microsoft.Extensions.Logging;

namespace KvStore.Storage.Wal;

public sealed partial class WriteAheadLog
{
    /// <summary>
    /// Reads every record from the head. Returns false (with the valid prefix) when the log ends in a torn tail:
    /// a bad record with no valid record after it. A bad record followed by a valid one throws <see cref="WalCorruptException"/>.
    /// On success builds <see cref="_replay"/> and the address bookkeeping.
    /// </summary>
    private bool ScanAndValidate(out List<byte[]> validRecords, out long tornAt)
    {
        validRecords = [];
        var addresses = new List<long>();
        tornAt = -1;
        using (var iterator = _log.Scan(_log.BeginAddress, _log.TailAddress))
        {
            while (true)
            {
                byte[] record;
                int length;
                long address;
                try
                {
                    if (!iterator.GetNext(out record, out length, out address, out _))
                    {
                        break;
                    }
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    var at = tornAt >= 0 ? tornAt : iterator.NextAddress;
                    throw new WalCorruptException($"WAL corrupt: unreadable record in file '{FileOf(at)}' at offset {OffsetOf(at)}", ex);
                }

                var valid = WalRecordCodec.IsValid(record.AsSpan(0, length));
                if (tornAt >= 0)
                {
                    if (valid)
                    {
                        throw new WalCorruptException(FileOf(tornAt), OffsetOf(tornAt), "checksum mismatch followed by valid records");
                    }

                    continue;
                }

                if (!valid)
                {
                    tornAt = address;
                    continue;
                }

                validRecords.Add(length == record.Length ? record : record.AsSpan(0, length).ToArray());
                addresses.Add(address);
            }
        }

        if (tornAt >= 0)
        {
            return false;
        }

        BuildReplay(validRecords, addresses);
        return true;
    }

    private void BuildReplay(List<byte[]> records, List<long> addresses)
    {
        var entries = new List<WalEntry>();
        WalHardState? hardState = null;
        WalSnapshotMarker? snapshot = null;
        _entryAddresses.Clear();
        _lastHardState = null;
        _lastSnapshot = null;
        for (var i = 0; i < records.Count; i++)
        {
            var record = records[i];
            switch (record[4])
            {
                case WalRecordCodec.KindEntry:
                    var entry = WalRecordCodec.DecodeEntry(record);
                    // An entry for index i replaces every earlier-read entry at index >= i.
                    var keep = entries.Count;
                    while (keep > 0 && entries[keep - 1].Index >= entry.Index)
                    {
                        keep--;
                    }

                    entries.RemoveRange(keep, entries.Count - keep);
                    if (snapshot is null || entry.Index > snapshot.Value.Index)
                    {
                        entries.Add(entry);
                    }

                    _entryAddresses.Add((addresses[i], entry.Index));
                    break;
                case WalRecordCodec.KindHardState:
                    hardState = WalRecordCodec.DecodeHardState(record);
                    _lastHardState = (addresses[i], hardState.Value);
                    break;
                case WalRecordCodec.KindSnapshot:
                case WalRecordCodec.KindSnapshotV2:
                    var marker = WalRecordCodec.DecodeSnapshot(record);
                    snapshot = marker;
                    _lastSnapshot = (addresses[i], marker);
                    if (marker.ReplacesLog)
                    {
                        // An installed snapshot replaces the whole local log, including a suffix past its index.
                        entries.Clear();
                        break;
                    }

                    var drop = 0;
                    while (drop < entries.Count && entries[drop].Index <= marker.Index)
                    {
                        drop++;
                    }

                    entries.RemoveRange(0, drop);
                    break;
                default:
                    break;
            }
        }

        _replay = new WalReplay { HardState = hardState, Snapshot = snapshot, Entries = entries };
    }

    /// <summary>
    /// Repairs damage confined to the tail (found by <see cref="WalPhysicalScan"/> before FasterLog opened the files):
    /// keeps every checksum-valid record before the damage, from the begin address of the last intact commit, and
    /// drops the rest, valid records after the damage included: they belong to the write that tore, which was never
    /// acknowledged, and keeping them would leave a gap in the log. Also used when records were written after the last durable commit point (a page flush that a
    /// commit did not follow): they are kept and committed, so later appends never leave stale bytes past the tail.
    /// </summary>
    private void RepairTail(WalPhysicalScan scan)
    {
        var from = Math.Max(scan.StartAddress, scan.CommitBeginAddress);
        var kept = scan.Records.Where(r => r.Address >= from).ToList();
        if (scan.BreakAddress >= 0)
        {
            _logger.LogWarning(
                "WAL torn tail in '{File}' at offset {Offset} ({Reason}), damage confined to the last write ({CommitsAfter} intact commit record after it, valid record after it at offset {ValidAfter}): dropping {Dropped} bytes up to offset {End}; keeping {Count} records (last intact commit ends at offset {CommitEnd}); repair synced",
                FileOf(scan.BreakAddress),
                OffsetOf(scan.BreakAddress),
                scan.BreakReason,
                scan.CommitsAfterBreak,
                scan.ValidAfterBreak < 0 ? -1 : OffsetOf(scan.ValidAfterBreak),
                scan.DataEnd - scan.BreakAddress,
                OffsetOf(scan.DataEnd - 1) + 1,
                kept.Count,
                scan.LastCommitEnd < 0 ? -1 : OffsetOf(scan.LastCommitEnd));
        }
        else
        {
            _logger.LogWarning(
                "WAL tail in '{File}' after offset {Offset} holds records written after the last durable commit point; keeping and committing them ({Count} records in all, no bytes dropped); repair synced",
                FileOf(Math.Max(scan.LastCommitEnd, scan.StartAddress)),
                scan.LastCommitEnd < 0 ? OffsetOf(scan.StartAddress) : OffsetOf(scan.LastCommitEnd),
                kept.Count);
        }

        RebuildLog(kept.Select(r => r.Record));
    }

    /// <summary>
    /// FasterLog cannot cut its tail, so the log is rebuilt from the given records in a fresh directory next to the
    /// old one and the directories are swapped (each step synced). <see cref="FinishInterruptedRepair"/> completes a
    /// swap a crash interrupted.
    /// </summary>
    private void RebuildLog(IEnumerable<byte[]> records)
    {
        var repair = _directory + RepairSuffix;
        if (System.IO.Directory.Exists(repair))
        {
            System.IO.Directory.Delete(repair, recursive: true);
        }

        System.IO.Directory.CreateDirectory(repair);
        var fresh = new WriteAheadLog(repair, _logger, wrapLogDevice: null);
        fresh.OpenLog();
        try
        {
            foreach (var record in records)
            {
                fresh._log.Enqueue(record);
            }

            fresh._log.Commit(spinWait: true);
        }
        finally
        {
            fresh.CloseLog();
        }

        // Segment files are written with O_SYNC; make every new directory entry durable too.
        foreach (var dir in System.IO.Directory.EnumerateDirectories(repair, "*", SearchOption.AllDirectories))
        {
            NativeFile.SyncDirectory(dir);
        }

        NativeFile.SyncDirectory(repair);
        SyncParent(repair);
        var old = _directory + TornSuffix;
        if (System.IO.Directory.Exists(old))
        {
            System.IO.Directory.Delete(old, recursive: true);
        }

        System.IO.Directory.Move(_directory, old);
        System.IO.Directory.Move(repair, _directory);
        SyncParent(_directory);
        System.IO.Directory.Delete(old, recursive: true);
        SyncParent(_directory);
    }

    private const string RepairSuffix = ".repair";
    private const string TornSuffix = ".torn";

    /// <summary>
    /// A crash during <see cref="RebuildLog"/>: with the log directory gone, the synced <c>.repair</c> copy is complete
    /// (it is moved only after it was built), so finish the swap; otherwise drop the leftovers.
    /// </summary>
    private static void FinishInterruptedRepair(string directory)
    {
        var repair = directory + RepairSuffix;
        var torn = directory + TornSuffix;
        if (!System.IO.Directory.Exists(directory) && System.IO.Directory.Exists(repair) && System.IO.Directory.Exists(torn))
        {
            System.IO.Directory.Move(repair, directory);
            SyncParent(directory);
        }

        if (System.IO.Directory.Exists(directory))
        {
            foreach (var leftover in (string[])[repair, torn])
            {
                if (System.IO.Directory.Exists(leftover))
                {
                    System.IO.Directory.Delete(leftover, recursive: true);
                }
            }
        }
    }
}
