namespace KvStore.Storage.Mvcc;

/// <summary>The store's physical size (etcd's dbSize).</summary>
public sealed partial class MvccStore
{
    /// <summary>
    /// What the store occupies (etcd's dbSize, the bbolt file's size): every file under the data directory (FasterKV log
    /// segments, checkpoints, the state record) plus the part of the FasterKV log that is still only in memory (its pages
    /// beyond what the segment files hold; at least the tail page a fresh store allocates), and never less than <see cref="DbSizeInUseBytes"/>, so that, as in etcd,
    /// dbSize &gt;= dbSizeInUse and a fresh store does not report 0. Callers hold whatever keeps the backend in place.
    /// </summary>
    private long AllocatedBytes()
    {
        long files = 0;
        long segments = 0;
        var segmentPrefix = _backend.DataFilePrefix;
        var directory = new DirectoryInfo(_dataDirectory);
        if (directory.Exists)
        {
            foreach (var file in directory.EnumerateFiles("*", SearchOption.AllDirectories))
            {
                try
                {
                    var length = file.Length;
                    files += length;
                    if (file.FullName.StartsWith(segmentPrefix, StringComparison.Ordinal))
                    {
                        segments += length;
                    }
                }
                catch (FileNotFoundException)
                {
                    // Deleted (an obsolete segment or checkpoint) while enumerating: it no longer counts.
                }
            }
        }

        // FasterKV allocates its log a page at a time (the tail page exists from the start, even in an empty store).
        var page = 1L << _options.PageSizeBits;
        var logStart = _backend.LogBeginAddress & ~(page - 1);
        var logEnd = (_backend.LogTailAddress + page - 1) & ~(page - 1);
        var log = Math.Max(page, logEnd - logStart);
        var inMemoryOnly = Math.Max(0, log - segments);
        return Math.Max(files + inMemoryOnly, DbSizeInUseBytes);
    }
}
