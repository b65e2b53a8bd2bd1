using System.Runtime.InteropServices;

namespace KvStore.Storage;

/// <summary>fsync of directories (new file names become durable only after the directory itself is synced).</summary>
internal static partial class NativeFile
{
    // Read-only is all fsync needs, on a directory as on a file. No O_DIRECTORY: its value differs between
    // architectures (x64's 0x10000 is O_DIRECT on arm64, which a directory refuses with EINVAL).
    private const int ORdOnly = 0;

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

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
