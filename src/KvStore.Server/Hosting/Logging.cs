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
    private const string TextTemplate = "{Timestamp:yyyy-MM-ddTHH:mm:ss.fffffffZ} {Level:u4} {SourceContext}: {Message:lj}{NewLine}{Exception}";

    /// <summary>Creates the process-wide logger.</summary>
    public static Logger Create(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var level = ToLevel(options.LogLevel);
        ITextFormatter formatter = options.LogFormat == "json"
            ? new ZapJsonFormatter()
            : new MessageTemplateTextFormatter(TextTemplate, null);

        var config = new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .MinimumLevel.Override("Microsoft", Max(level, LogEventLevel.Warning))
            .MinimumLevel.Override("Grpc", Max(level, LogEventLevel.Warning))
            .Enrich.FromLogContext()
            .Enrich.WithProperty("SourceContext", "kvstore")
            .Enrich.With<OneSourceNamingScheme>();

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
    /// Loggers named after our types ("KvStore.Server.Replication.RaftHost") are shown as "kvstore.&lt;area&gt;"
    /// ("kvstore.replication"), the scheme the hand-named ones ("kvstore.mvcc", "kvstore.wal") already use.
    /// </summary>
    private sealed class OneSourceNamingScheme : ILogEventEnricher
    {
        public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory)
        {
            if (logEvent.Properties.TryGetValue("SourceContext", out var value)
                && value is ScalarValue { Value: string name }
                && name.StartsWith("KvStore.", StringComparison.Ordinal))
            {
                var parts = name.Split('.');
                var area = parts.Length > 3 ? parts[2] : parts[^1];
                logEvent.AddOrUpdateProperty(propertyFactory.CreateProperty("SourceContext", "kvstore." + area.ToLowerInvariant()));
            }
        }
    }
}
