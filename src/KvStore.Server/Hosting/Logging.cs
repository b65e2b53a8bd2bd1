using System.Collections.Concurrent;
using KvStore.Server.Options;
using Serilog;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Formatting.Display;

namespace KvStore.Server.Hosting;

/// <summary>
/// Serilog configuration from etcd's logging flags: --log-level, --log-outputs (default = stderr, stdout, or file paths)
/// and our --log-format: text = readable lines; json = etcd's zap fields, one JSON object per line. An explicit
/// --logger zap (etcd 3.5's default, which writes JSON) selects json unless --log-format says otherwise.
/// </summary>
public static class Logging
{
    /// <summary>The property holding where an event comes from ("replication/RaftHost"): zap's "caller" field.</summary>
    public const string CallerProperty = "Caller";

    private const string TextTemplate = "{Timestamp:yyyy-MM-ddTHH:mm:ss.fffffffZ} {Level:u4} {SourceContext}: {Message:lj}";

    /// <summary>Creates the process-wide logger.</summary>
    public static Logger Create(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var level = ToLevel(options.LogLevel);
        ITextFormatter formatter = options.LogFormat == "json"
            ? new ZapJsonFormatter()
            : new TextLineFormatter();

        var config = new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .MinimumLevel.Override("Microsoft", Max(level, LogEventLevel.Warning))
            .MinimumLevel.Override("Grpc", Max(level, LogEventLevel.Warning))
            .Enrich.FromLogContext()
            .Enrich.WithProperty("SourceContext", "kvstore")
            .Enrich.With<OneSourceNamingScheme>()
            .Enrich.With<NoRequestScope>();

        foreach (var output in options.LogOutputs)
        {
            switch (output)
            {
                case "default" or "stderr":
                    config = config.WriteTo.Console(formatter, standardErrorFromLevel: LogEventLevel.Verbose);
                    break;
                case "stdout":
                    config = config.WriteTo.Console(formatter);
                    break;
                default:
                    config = config.WriteTo.File(formatter, output, flushToDiskInterval: TimeSpan.FromSeconds(1));
                    break;
            }
        }

        return config.CreateLogger();
    }

    private static LogEventLevel Max(LogEventLevel a, LogEventLevel b) => a > b ? a : b;

    private static LogEventLevel ToLevel(string level) => level switch
    {
        "debug" => LogEventLevel.Debug,
        "info" => LogEventLevel.Information,
        "warn" => LogEventLevel.Warning,
        "error" => LogEventLevel.Error,
        _ => LogEventLevel.Fatal,
    };

    /// <summary>
    /// One readable line: time, level, source, message, then the fields of <see cref="EtcdLog"/> events (which no
    /// message placeholder shows) as name=value, then the exception if any.
    /// </summary>
    private sealed class TextLineFormatter : ITextFormatter
    {
        private static readonly MessageTemplateTextFormatter Line = new(TextTemplate, null);

        public void Format(LogEvent logEvent, TextWriter output)
        {
            Line.Format(logEvent, output);
            if (IsEtcdEvent(logEvent))
            {
                foreach (var (name, value) in logEvent.Properties)
                {
                    if (name is "SourceContext" or "EventId" or CallerProperty)
                    {
                        continue;
                    }

                    output.Write(' ');
                    output.Write(name);
                    output.Write('=');
                    if (value is ScalarValue { Value: string text })
                    {
                        output.Write(text);
                    }
                    else if (value is ScalarValue { Value: bool flag })
                    {
                        output.Write(flag ? "true" : "false");
                    }
                    else
                    {
                        value.Render(output, null, System.Globalization.CultureInfo.InvariantCulture);
                    }
                }
            }

            output.WriteLine();
            if (logEvent.Exception is { } e)
            {
                output.WriteLine(e.ToString());
            }
        }

        private static bool IsEtcdEvent(LogEvent logEvent) =>
            logEvent.Properties.TryGetValue("EventId", out var id)
            && id is StructureValue structure
            && structure.Properties.Any(p => p is { Name: "Name", Value: ScalarValue { Value: string name } } && name == EtcdLog.Event.Name);
    }

    /// <summary>
    /// Drops the fields ASP.NET Core's scopes add to everything logged while a call is served (Kestrel's ConnectionId;
    /// RequestId and RequestPath from the hosting layer's request scope, which ServerHost filters off): etcd's lines
    /// never carry them, so a defragment's lines, logged inside the Defragment call, would otherwise differ from
    /// etcd's. Runs after the scope's fields were attached.
    /// </summary>
    private sealed class NoRequestScope : ILogEventEnricher
    {
        public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory)
        {
            logEvent.RemovePropertyIfPresent("RequestId");
            logEvent.RemovePropertyIfPresent("RequestPath");
            logEvent.RemovePropertyIfPresent("ConnectionId");
        }
    }

    /// <summary>
    /// Loggers named after our types ("KvStore.Server.Replication.RaftHost") are shown as "kvstore.&lt;area&gt;"
    /// ("kvstore.replication"), the scheme the hand-named ones ("kvstore.mvcc", "kvstore.wal") already use. The
    /// finer origin ("replication/RaftHost", like zap's "etcdserver/raft.go") is kept as the caller.
    /// </summary>
    private sealed class OneSourceNamingScheme : ILogEventEnricher
    {
        // A handful of logger names, each renamed once rather than on every event.
        private readonly ConcurrentDictionary<string, (LogEventProperty? Source, LogEventProperty Caller)> _names = new(StringComparer.Ordinal);

        public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory)
        {
            if (!logEvent.Properties.TryGetValue("SourceContext", out var value) || value is not ScalarValue { Value: string name })
            {
                return;
            }

            var (source, caller) = _names.GetOrAdd(name, Rename);
            if (source is not null)
            {
                logEvent.AddOrUpdateProperty(source);
            }

            logEvent.AddPropertyIfAbsent(caller);
        }

        private static (LogEventProperty? Source, LogEventProperty Caller) Rename(string name)
        {
            if (name.StartsWith("KvStore.", StringComparison.Ordinal))
            {
                var parts = name.Split('.');
                var area = (parts.Length > 3 ? parts[2] : parts[^1]).ToLowerInvariant();
                var caller = parts.Length > 3 ? area + "/" + parts[^1] : area;
                return (new LogEventProperty("SourceContext", new ScalarValue("kvstore." + area)), new LogEventProperty(CallerProperty, new ScalarValue(caller)));
            }

            var origin = name.StartsWith("kvstore.", StringComparison.Ordinal) ? name["kvstore.".Length..] : name;
            return (null, new LogEventProperty(CallerProperty, new ScalarValue(origin)));
        }
    }
}
