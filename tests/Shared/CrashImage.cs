namespace KvStore.Testing;

/// <summary>
/// Copies a data directory as a crash would leave it (test only), while its owner may still be running: FasterLog's
/// and FasterKV's background workers create commit and checkpoint directories, and delete old segments and commit
/// files, between the listing and the copy. A file gone by then is not part of the image; a file's directory is
/// created when the file is copied, whether or not the listing of directories saw it.
/// </summary>
internal static class CrashImage
{
    public static void Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            try
            {
                File.Copy(file, target);
            }
            catch (FileNotFoundException)
            {
                // Deleted after the listing: the image is of a moment just after that.
            }
        }

        foreach (var directory in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, directory))); // empty ones too
        }
    }
}
