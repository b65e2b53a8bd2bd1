namespace KvStore.Storage;

/// <summary>
/// Creates directories so that they survive a power cut: a new directory's name lives in its parent, which is only
/// durable once the parent itself has been fsynced. Creating "data-dir/member" on a first start without that sync can
/// lose the whole member (and every file in it) even though each file inside was synced.
/// </summary>
public static class DurableDirectory
{
    /// <summary>Creates <paramref name="path"/> and any missing ancestors, syncing the parent of each one it created; returns true when it created any.</summary>
    public static bool Create(string path)
    {
        var full = Path.GetFullPath(path);
        var missing = new Stack<string>();
        for (var d = full; d is not null && !Directory.Exists(d); d = Path.GetDirectoryName(d))
        {
            missing.Push(d);
        }

        if (missing.Count == 0)
        {
            return false;
        }

        // Top down: each new directory's entry is made durable in its parent before the next level goes inside it.
        while (missing.TryPop(out var d))
        {
            Directory.CreateDirectory(d);
            NativeFile.SyncDirectory(Path.GetDirectoryName(d)!);
        }

        return true;
    }

    /// <summary>fsyncs <paramref name="directory"/>, making the names created or renamed in it durable.</summary>
    public static void Sync(string directory) => NativeFile.SyncDirectory(directory);

    /// <summary>
    /// fsyncs every directory below <paramref name="root"/>, deepest first, then the root itself: the names of files
    /// and directories a library created in there (without syncing their parents) become durable. A directory removed
    /// meanwhile (an outdated checkpoint being deleted) is skipped.
    /// </summary>
    public static void SyncTree(string root)
    {
        SyncChildren(root);
        NativeFile.SyncDirectory(root);
    }

    private static void SyncChildren(string directory)
    {
        string[] children;
        try
        {
            children = Directory.GetDirectories(directory);
        }
        catch (DirectoryNotFoundException)
        {
            return;
        }

        foreach (var child in children)
        {
            SyncChildren(child);
            try
            {
                NativeFile.SyncDirectory(child);
            }
            catch (IOException) when (!Directory.Exists(child))
            {
            }
        }
    }
}
