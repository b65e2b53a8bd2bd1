using System.Globalization;
using KvStore.Server.Options;
using KvStore.Storage.Bolt;
using KvStore.Storage.EtcdSnapshot;

namespace KvStore.Server.Backup;

/// <summary>
/// The offline verbs <c>kvstore snapshot status</c> and <c>kvstore snapshot restore</c>, with etcdutl's (and etcdctl
/// 3.4's) flags, defaults, output and error messages. Flags take <c>--flag value</c> or <c>--flag=value</c>.
/// </summary>
public static class SnapshotCommand
{
    /// <summary>The help text.</summary>
    public const string Usage = """
        Usage:
          kvstore snapshot status <filename> [-w simple|table|json]
          kvstore snapshot restore <filename> [options]

        Restore options:
          --data-dir ""                                      Path to the data directory (default <name>.etcd)
          --name "default"                                   Human-readable name for this member
          --initial-cluster "default=http://localhost:2380"  Initial cluster configuration for restore bootstrap
          --initial-cluster-token "etcd-cluster"             Initial cluster token for the cluster during restore bootstrap
          --initial-advertise-peer-urls "http://localhost:2380"  This member's peer URLs
          --skip-hash-check[=false]                          Ignore snapshot integrity hash value (required if copied from data directory)

        """;

    /// <summary>Runs a verb (args after "snapshot"); returns the exit code.</summary>
    public static int Run(IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        try
        {
            if (args.Count == 0 || args[0] is "-h" or "--help" or "help")
            {
                stdout.Write(Usage);
                return args.Count == 0 ? 2 : 0;
            }

            return args[0] switch
            {
                "status" => Status(Parse(args.Skip(1), ["write-out", "w"], []), stdout),
                "restore" => Restore(
                    Parse(args.Skip(1), ["data-dir", "name", "initial-cluster", "initial-cluster-token", "initial-advertise-peer-urls"], ["skip-hash-check"]),
                    stdout),
                _ => throw new OptionsException($"unknown command \"{args[0]}\" for \"kvstore snapshot\""),
            };
        }
        catch (Exception e) when (e is OptionsException or InvalidDataException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"Error: {e.Message}");
            return 1;
        }
    }

    private static int Status(ParsedArgs parsed, TextWriter stdout)
    {
        var file = parsed.SingleFile("status");
        var format = parsed.Get("write-out") ?? parsed.Get("w") ?? "simple";
        if (!File.Exists(file))
        {
            throw new FileNotFoundException($"stat {file}: no such file or directory");
        }

        EtcdSnapshotStatus status;
        using (var reader = BoltReader.Open(file))
        {
            status = EtcdSnapshotFile.Status(reader);
        }

        var hash = status.Hash.ToString("x", CultureInfo.InvariantCulture);
        var size = HumanBytes.Format(status.TotalSize);
        switch (format)
        {
            case "simple":
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{hash}, {status.Revision}, {status.TotalKey}, {size}"));
                break;
            case "json":
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"hash\":{status.Hash},\"revision\":{status.Revision},\"totalKey\":{status.TotalKey},\"totalSize\":{status.TotalSize}}}"));
                break;
            case "table":
                WriteTable(stdout, ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                    [hash, status.Revision.ToString(CultureInfo.InvariantCulture), status.TotalKey.ToString(CultureInfo.InvariantCulture), size]);
                break;
            default:
                throw new OptionsException($"unsupported output format \"{format}\" for snapshot status (simple, table, json)");
        }

        return 0;
    }

    private static int Restore(ParsedArgs parsed, TextWriter stdout)
    {
        var name = parsed.Get("name") ?? "default";
        var dataDir = parsed.Get("data-dir") is { Length: > 0 } dir ? dir : name + ".etcd";
        var advertise = parsed.Get("initial-advertise-peer-urls") ?? "http://localhost:2380";
        if (!GoValues.TryParseUrls(advertise, out var urls, out var error))
        {
            throw new OptionsException($"--initial-advertise-peer-urls: {error}");
        }

        var options = new SnapshotRestoreOptions(
            parsed.SingleFile("restore"),
            dataDir,
            name,
            parsed.Get("initial-cluster") ?? "default=http://localhost:2380",
            parsed.Get("initial-cluster-token") ?? "etcd-cluster",
            [.. urls.Select(FlagParser.UrlText)],
            parsed.Flag("skip-hash-check"));
        var result = SnapshotRestore.Run(options, line => stdout.WriteLine(line));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"restored snapshot {options.File} into {Path.GetFullPath(dataDir)}: revision {result.Revision}, compact revision {result.CompactRevision}, " +
            $"{result.Revisions} revisions, {result.Leases} leases, member {result.Identity.MemberId:x} ({name}) of cluster {result.Identity.ClusterId:x}, took {result.Took.TotalSeconds:F2}s"));
        return 0;
    }

    /// <summary>etcdctl's table: centred headers, right-aligned cells.</summary>
    private static void WriteTable(TextWriter output, string[] headers, string[] cells)
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, cells[i].Length)).ToArray();
        var line = "+" + string.Join("+", widths.Select(w => new string('-', w + 2))) + "+";
        output.WriteLine(line);
        output.WriteLine("|" + string.Join("|", headers.Select((h, i) =>
        {
            var left = (widths[i] - h.Length) / 2;
            return " " + new string(' ', left) + h + new string(' ', widths[i] - h.Length - left) + " ";
        })) + "|");
        output.WriteLine(line);
        output.WriteLine("|" + string.Join("|", cells.Select((c, i) => " " + c.PadLeft(widths[i]) + " ")) + "|");
        output.WriteLine(line);
    }

    private static ParsedArgs Parse(IEnumerable<string> args, string[] valueFlags, string[] boolFlags)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var files = new List<string>();
        using var e = args.GetEnumerator();
        while (e.MoveNext())
        {
            var arg = e.Current;
            if (!arg.StartsWith('-') || arg == "-")
            {
                files.Add(arg);
                continue;
            }

            var body = arg.TrimStart('-');
            var eq = body.IndexOf('=', StringComparison.Ordinal);
            var flag = eq >= 0 ? body[..eq] : body;
            if (boolFlags.Contains(flag))
            {
                var text = eq >= 0 ? body[(eq + 1)..] : "true";
                values[flag] = bool.TryParse(text, out var b) ? (b ? "true" : "false")
                    : throw new OptionsException($"invalid argument \"{text}\" for \"--{flag}\" flag: strconv.ParseBool: parsing \"{text}\": invalid syntax");
            }
            else if (valueFlags.Contains(flag))
            {
                if (eq >= 0)
                {
                    values[flag] = body[(eq + 1)..];
                }
                else if (e.MoveNext())
                {
                    values[flag] = e.Current;
                }
                else
                {
                    throw new OptionsException($"flag needs an argument: {arg}");
                }
            }
            else
            {
                throw new OptionsException($"unknown flag: {arg}");
            }
        }

        return new ParsedArgs(values, files);
    }

    private sealed record ParsedArgs(Dictionary<string, string> Values, List<string> Files)
    {
        public string? Get(string flag) => Values.GetValueOrDefault(flag);

        public bool Flag(string flag) => Values.GetValueOrDefault(flag) == "true";

        public string SingleFile(string verb) => Files.Count == 1
            ? Files[0]
            : throw new OptionsException($"snapshot {verb} requires exactly one argument");
    }
}
