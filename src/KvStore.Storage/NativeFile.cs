using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace KvStore.Storage;

/// <summary>
/// fsync of directories (new file names become durable only after the directory itself is synced), and allocation
/// of file space ahead of writes.
/// </summary>
internal static partial class NativeFile
{
    // Read-only is all fsync needs, on a directory as on a file. No O_DIRECTORY: its value differs between
    // architectures (x64's 0x10000 is O_DIRECT on arm64, which a directory refuses with EINVAL).
    private const int ORdOnly = 0;

    private const int EIntr = 4;
    private const int ENoSys = 38;
    private const int EOpNotSupp = 95;

    /// <summary>Tests: told each directory synced.</summary>
    internal static Action<string>? SyncedForTest { get; set; }

    public static void SyncDirectory(string path)
    {
        SyncedForTest?.Invoke(path);
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var fd = Open(path, ORdOnly);
        if (fd < 0)
        {
            throw new IOException($"open('{path}') for fsync failed: errno {Marshal.GetLastPInvokeError()}");
        }

        try
        {
            if (Fsync(fd) != 0)
            {
                throw new IOException($"fsync('{path}') failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>
    /// Allocates <paramref name="length"/> bytes of the file from <paramref name="offset"/>, extending its length
    /// (the new bytes read as zeros). False when the file system cannot (nothing was changed); throws on any other
    /// failure, a full disk included.
    /// </summary>
    public static bool Allocate(SafeFileHandle file, long offset, long length)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        while (Fallocate(file, 0, offset, length) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            switch (errno)
            {
                case EIntr:
                    continue;
                case EOpNotSupp or ENoSys:
                    return false;
                default:
                    throw new IOException($"fallocate of {length} bytes at offset {offset} failed: errno {errno}", errno);
            }
        }

        return true;
    }

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int Fallocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
