namespace KvStore.Storage.Tests.Mvcc;

/// <summary>What a crash leaves of an open store: a copy of its files as they are now.</summary>
internal static class StoreFiles
{
    public static void CopyAsCrashImage(string storeDir, string imageDir)
    {
        foreach (var file in Directory.EnumerateFiles(storeDir, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(imageDir, Path.GetRelativePath(storeDir, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
