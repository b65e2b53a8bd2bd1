namespace KvStore.Storage.Wal;

/// <summary>A WAL record in the middle of the log failed its checksum; the message names the file and offset.</summary>
public sealed class WalCorruptException : Exception
{
    public WalCorruptException()
    {
    }

    public WalCorruptException(string message)
        : base(message)
    {
    }

    public WalCorruptException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public WalCorruptException(string filePath, long fileOffset, string reason)
        : base($"WAL corrupt: {reason} in file '{filePath}' at offset {fileOffset}")
    {
        FilePath = filePath;
        FileOffset = fileOffset;
    }

    /// <summary>The segment file that holds the bad record.</summary>
    public string? FilePath { get; }

    /// <summary>Byte offset of the bad record inside <see cref="FilePath"/>.</summary>
    public long FileOffset { get; }
}
