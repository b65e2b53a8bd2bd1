using System.Globalization;
using System.Text;

namespace KvStore.Storage.Backend;

/// <summary>
/// Checksums of FasterKV's index checkpoints. The index checkpoint files (<c>index-checkpoints/&lt;token&gt;/</c>: the
/// hash table, its overflow buckets, the metadata) carry no checksum, and a damaged bucket silently hides a key or leads
/// to an older version of it. Once a checkpoint is complete, <see cref="RecordMissing"/> writes the length and CRC-32C
/// of each of those files to <c>index-sums/&lt;token&gt;</c> (durably: temporary file, fsync, rename); an open
/// <see cref="Verify"/>s them before FasterKV reads the index. That reads the index files once (megabytes: 64 bytes per
/// hash bucket) instead of every key of the store through the recovered index, which took most of a large store's open.
/// </summary>
/// <remarks>
/// An index checkpoint without a readable record (a crash between FasterKV's commit of it and the record, or a damaged
/// record, whose last line is the checksum of the lines before it) is checked the slow way instead, so a missing record
/// never makes a damaged index pass.
/// </remarks>
internal static class IndexChecksums
{
    public const string DirectoryName = "index-sums";
    private const string IndexDirectoryName = "index-checkpoints";
    private const string EndTag = "end";

    /// <summary>
    /// Records the checksums of every complete index checkpoint that has none yet, and drops the records of index
    /// checkpoints FasterKV has removed. Called after a checkpoint completed, before its names are made durable.
    /// </summary>
    public static void RecordMissing(string checkpointDir)
    {
        var sums = Path.Combine(checkpointDir, DirectoryName);
        Directory.CreateDirectory(sums);
        var indexDir = Path.Combine(checkpointDir, IndexDirectoryName);
        var tokens = Directory.Exists(indexDir)
            ? Directory.EnumerateDirectories(indexDir).Select(Path.GetFileName).OfType<string>().ToHashSet(StringComparer.Ordinal)
            : [];
        foreach (var token in tokens)
        {
            var record = Path.Combine(sums, token);
            if (File.Exists(record))
            {
                continue;
            }

            string text;
            try
            {
                text = Describe(Path.Combine(indexDir, token));
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                continue; // removed by FasterKV meanwhile (an outdated checkpoint)
            }

            var temporary = record + ".tmp";
            using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write))
            {
                file.Write(Encoding.ASCII.GetBytes(text));
                file.Flush(flushToDisk: true);
            }

            File.Move(temporary, record, overwrite: true);
        }

        // Records of removed checkpoints, and temporary files a crash left behind.
        foreach (var stale in Directory.EnumerateFiles(sums).Where(f => !tokens.Contains(Path.GetFileName(f))))
        {
            File.Delete(stale);
        }
    }

    /// <summary>
    /// True when the index checkpoint's files match their record; false when there is no readable record (the caller
    /// checks the index another way). Throws <see cref="InvalidDataException"/> naming the index files when a file
    /// differs from its record.
    /// </summary>
    public static bool Verify(string checkpointDir, Guid token)
    {
        var name = token.ToString();
        var record = Path.Combine(checkpointDir, DirectoryName, name);
        if (!File.Exists(record) || Parse(File.ReadAllText(record, Encoding.ASCII)) is not { } expected)
        {
            return false;
        }

        var directory = Path.Combine(checkpointDir, IndexDirectoryName, name);
        string found;
        try
        {
            found = Describe(directory);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new InvalidDataException($"FasterKV index checkpoint '{directory}' recorded in '{record}' is missing ({e.Message})", e);
        }

        if (found != expected)
        {
            var files = Directory.Exists(directory) ? string.Join(", ", Directory.EnumerateFiles(directory)) : "(none)";
            throw new InvalidDataException(
                $"FasterKV index checkpoint in '{directory}' is corrupt: its files differ from the checksums recorded in '{record}' when it was taken; index files: {files}");
        }

        return true;
    }

    /// <summary>One line per file of the checkpoint (name, length, CRC-32C), then the checksum of those lines.</summary>
    private static string Describe(string directory)
    {
        var lines = new StringBuilder();
        foreach (var path in Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal))
        {
            var crc = Crc32C.Create();
            using (var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16))
            {
                var buffer = new byte[1 << 16];
                int read;
                while ((read = file.Read(buffer)) > 0)
                {
                    crc.Append(buffer.AsSpan(0, read));
                }

                lines.Append(CultureInfo.InvariantCulture, $"{Path.GetFileName(path)} {file.Length} {crc.Current:x8}\n");
            }
        }

        var body = lines.ToString();
        return body + string.Create(CultureInfo.InvariantCulture, $"{EndTag} {Crc32C.Compute(Encoding.ASCII.GetBytes(body)):x8}\n");
    }

    /// <summary>The record as written, or null when it is damaged (its last line is not the checksum of the lines before).</summary>
    private static string? Parse(string text)
    {
        var last = text.LastIndexOf(EndTag + " ", StringComparison.Ordinal);
        if (last < 0 || (last > 0 && text[last - 1] != '\n') || !text.EndsWith('\n'))
        {
            return null;
        }

        var body = text[..last];
        return text == body + string.Create(CultureInfo.InvariantCulture, $"{EndTag} {Crc32C.Compute(Encoding.ASCII.GetBytes(body)):x8}\n") ? text : null;
    }
}
