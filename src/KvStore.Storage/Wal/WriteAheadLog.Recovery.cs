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
    /// FasterLog cannot cut its tail, so a torn tail is repaired by copying the valid prefix into a fresh log
    /// next to the old one and swapping the directories (each step synced).
    /// </summary>
    private void RepairTornTail(List<byte[]> validRecords, long tornAt)
    {
        _logger.LogWarning(
            "WAL torn tail: record in '{File}' at offset {Offset} is incomplete or fails its checksum and nothing valid follows; keeping {Count} valid records and dropping the tail",
            FileOf(tornAt),
            OffsetOf(tornAt),
            validRecords.Count);
        CloseLog();
        var repair = _directory + ".repair";
        if (System.IO.Directory.Exists(repair))
        {
            System.IO.Directory.Delete(repair, recursive: true);
        }

        System.IO.Directory.CreateDirectory(repair);
        var fresh = new WriteAheadLog(repair, _logger);
        fresh.OpenLog();
        try
        {
            foreach (var record in validRecords)
            {
                fresh._log.Enqueue(record);
            }

            fresh._log.Commit(spinWait: true);
        }
        finally
        {
            fresh.CloseLog();
        }

        NativeFile.SyncDirectory(repair);
        var old = _directory + ".torn";
        if (System.IO.Directory.Exists(old))
        {
            System.IO.Directory.Delete(old, recursive: true);
        }

        System.IO.Directory.Move(_directory, old);
        System.IO.Directory.Move(repair, _directory);
        SyncParent(_directory);
        System.IO.Directory.Delete(old, recursive: true);
    }
}
