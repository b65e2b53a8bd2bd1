using System.Collections;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Contract;

/// <summary>
/// Log events that etcd also writes, with etcd's message and etcd's field names ("local-member-id", hex member IDs),
/// so pipelines that parse etcd's <c>--logger zap</c> lines read ours the same way. The message is fixed text (etcd's
/// <c>msg</c>); the fields travel as structured properties: the JSON format writes them as fields, the text format
/// appends them as <c>name=value</c>. These events are rare (start, elections, membership, compaction, defrag, alarms),
/// so building their fields is off every request path.
/// </summary>
public static class EtcdLog
{
    /// <summary>The event ID of these events: the text format recognises them by it and appends their fields.</summary>
    public static readonly EventId Event = new(1090, "etcd");

    public static void Info(ILogger logger, string message, params ReadOnlySpan<(string Name, object? Value)> fields) =>
        Write(logger, LogLevel.Information, message, fields);

    public static void Warn(ILogger logger, string message, params ReadOnlySpan<(string Name, object? Value)> fields) =>
        Write(logger, LogLevel.Warning, message, fields);

    public static void Write(ILogger logger, LogLevel level, string message, ReadOnlySpan<(string Name, object? Value)> fields)
    {
        ArgumentNullException.ThrowIfNull(logger);
        if (!logger.IsEnabled(level))
        {
            return;
        }

        var state = new Fields(message, fields.ToArray());
        logger.Log(level, Event, state, null, static (s, _) => s.ToString());
    }

    /// <summary>A member ID as etcd prints it (types.ID: lower-case hex without padding).</summary>
    public static string Id(ulong id) => id.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>A duration as Go prints a time.Duration ("1.5s", "250ms", "490.748µs").</summary>
    public static string Duration(TimeSpan d)
    {
        var seconds = d.TotalSeconds;
        return seconds switch
        {
            0 => "0s",
            >= 1 => seconds.ToString("0.#########", CultureInfo.InvariantCulture) + "s",
            >= 0.001 => (seconds * 1e3).ToString("0.######", CultureInfo.InvariantCulture) + "ms",
            _ => (seconds * 1e6).ToString("0.###", CultureInfo.InvariantCulture) + "µs",
        };
    }

    /// <summary>The event's state: the message as MEL's "{OriginalFormat}" (no placeholders) and the fields.</summary>
    private sealed class Fields(string message, (string Name, object? Value)[] fields) : IReadOnlyList<KeyValuePair<string, object?>>
    {
        public int Count => fields.Length + 1;

        public KeyValuePair<string, object?> this[int index] => index < fields.Length
            ? new KeyValuePair<string, object?>(fields[index].Name, fields[index].Value)
            : new KeyValuePair<string, object?>("{OriginalFormat}", message);

        public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
        {
            for (var i = 0; i < Count; i++)
            {
                yield return this[i];
            }
        }

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

        /// <summary>The line for loggers that only take text: the message, then name=value for each field.</summary>
        public override string ToString()
        {
            var text = new StringBuilder(message);
            foreach (var (name, value) in fields)
            {
                text.Append(' ').Append(name).Append('=').Append(value is IEnumerable<string> list ? "[" + string.Join(',', list) + "]" : Convert.ToString(value, CultureInfo.InvariantCulture));
            }

            return text.ToString();
        }
    }
}
