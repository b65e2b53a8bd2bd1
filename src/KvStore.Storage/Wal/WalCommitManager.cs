using FASTER.core;

namespace KvStore.Storage.Wal;

/// <summary>
/// FasterLog's commit metadata (commits/log-commits/commit.N.0) written only every
/// <see cref="WriteAheadLog.CommitMetadataEvery"/> commits. In fast-commit mode the commit record inside the log is the
/// durable commit point and recovery scans forward from the last metadata file to the last intact commit record, so
/// skipping the file loses nothing. Writing it per commit cost a new O_SYNC file plus an unlink of the previous one
/// (two journal commits) on every WAL sync.
/// <para>
/// Exception: a commit that moves the begin address (TruncateUntil) always writes its metadata. FasterLog deletes the
/// segment files below the new begin address right after this call, and recovery starts its scan at the until address
/// of the last metadata file, which must not lie in a deleted segment.
/// </para>
/// </summary>
internal sealed class WalCommitManager(string commitDirectory, int every) : ILogCommitManager
{
    private readonly DeviceLogCommitCheckpointManager _inner = new(
        new LocalStorageNamedDeviceFactory(),
        new DefaultCheckpointNamingScheme(commitDirectory),
        removeOutdated: true,
        fastCommitThrottleFreq: every);

    private long _writtenBegin = -1;

    public void Commit(long beginAddress, long untilAddress, byte[] commitMetadata, long commitNum, bool forceWriteMetadata)
    {
        var force = forceWriteMetadata || beginAddress != Interlocked.Read(ref _writtenBegin);
        _inner.Commit(beginAddress, untilAddress, commitMetadata, commitNum, force);
        if (force)
        {
            Interlocked.Exchange(ref _writtenBegin, beginAddress);
        }
    }

    public byte[] GetCommitMetadata(long commitNum) => _inner.GetCommitMetadata(commitNum);

    public IEnumerable<long> ListCommits() => _inner.ListCommits();

    public void RemoveCommit(long commitNum) => _inner.RemoveCommit(commitNum);

    public void RemoveAllCommits() => _inner.RemoveAllCommits();

    public void OnRecovery(long commitNum) => _inner.OnRecovery(commitNum);

    public void Dispose() => _inner.Dispose();
}
