using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Formatting.Display;
using Serilog.Parsing;

namespace KvStore.Server.Hosting;

/// <summary>
/// One JSON object per line with the fields etcd's zap logger writes, so log pipelines that parse etcd keep working:
/// <c>level</c> (debug/info/warn/error/fatal), <c>ts</c> (UTC, milliseconds), <c>caller</c> (the component and type,
/// where zap names the Go file), <c>msg</c>, then the event's properties in etcd's kebab-case (<c>MemberId</c> becomes
/// <c>member-id</c>; <see cref="EtcdLog"/> events already carry etcd's names) and <c>error</c>. A property the message
/// formats (<c>{PeerId:x}</c>) is written as formatted, so member IDs are hex strings as in etcd.
/// </summary>
public sealed class ZapJsonFormatter : ITextFormatter
{
    // The message as text (string values unquoted), as the readable format prints it.
    private static readonly MessageTemplateTextFormatter Message = new("{Message:lj}");

    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public void Format(LogEvent logEvent, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        ArgumentNullException.ThrowIfNull(output);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, WriterOptions))
        {
            json.WriteStartObject();
            json.WriteString("level", Level(logEvent.Level));
            json.WriteString("ts", logEvent.Timestamp.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            if (logEvent.Properties.TryGetValue(Logging.CallerProperty, out var caller) && caller is ScalarValue { Value: string callerText })
            {
                json.WriteString("caller", callerText);
            }

            using var message = new StringWriter(CultureInfo.InvariantCulture);
            Message.Format(logEvent, message);
            json.WriteString("msg", message.ToString());
            foreach (var (name, value) in logEvent.Properties)
            {
                if (name is "SourceContext" or "EventId" or Logging.CallerProperty)
                {
                    continue;
                }

                json.WritePropertyName(KebabCase(name));
                if (FormatOf(logEvent.MessageTemplate, name) is { } format && value is ScalarValue { Value: IFormattable formattable })
                {
                    json.WriteStringValue(formattable.ToString(format, CultureInfo.InvariantCulture));
                }
                else
                {
                    Write(json, value);
                }
            }

            if (logEvent.Exception is { } e)
            {
                json.WriteString("error", e.Message);
            }

            json.WriteEndObject();
        }

        output.Write(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        output.Write('\n');
    }

    /// <summary>The format the message gives property <paramref name="name"/> ("x" in {PeerId:x}), or null.</summary>
    private static string? FormatOf(MessageTemplate template, string name)
    {
        foreach (var token in template.Tokens)
        {
            if (token is PropertyToken { Format: { Length: > 0 } format } property && property.PropertyName == name)
            {
                return format;
            }
        }

        return null;
    }

    private static string Level(LogEventLevel level) => level switch
    {
        LogEventLevel.Verbose or LogEventLevel.Debug => "debug",
        LogEventLevel.Information => "info",
        LogEventLevel.Warning => "warn",
        LogEventLevel.Error => "error",
        _ => "fatal",
    };

    private static void Write(Utf8JsonWriter json, LogEventPropertyValue value)
    {
        switch (value)
        {
            case ScalarValue { Value: null }:
                json.WriteNullValue();
                break;
            case ScalarValue { Value: bool b }:
                json.WriteBooleanValue(b);
                break;
            case ScalarValue { Value: int or long or uint or short or ushort or byte } s:
                json.WriteNumberValue(Convert.ToInt64(s.Value, CultureInfo.InvariantCulture));
                break;
            case ScalarValue { Value: ulong u }:
                json.WriteNumberValue(u);
                break;
            case ScalarValue { Value: double or float or decimal } s:
                json.WriteNumberValue(Convert.ToDouble(s.Value, CultureInfo.InvariantCulture));
                break;
            case ScalarValue s:
                json.WriteStringValue(Convert.ToString(s.Value, CultureInfo.InvariantCulture));
                break;
            case SequenceValue sequence:
                json.WriteStartArray();
                foreach (var element in sequence.Elements)
                {
                    Write(json, element);
                }

                json.WriteEndArray();
                break;
            default:
                json.WriteStringValue(value.ToString());
                break;
        }
    }

    /// <summary>MemberId → member-id, as etcd names its fields.</summary>
    internal static string KebabCase(string name)
    {
        var text = new StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c))
            {
                if (i > 0 && (char.IsLower(name[i - 1]) || (i + 1 < name.Length && char.IsLower(name[i + 1]))))
                {
                    text.Append('-');
                }

                text.Append(char.ToLowerInvariant(c));
            }
            else
            {
                text.Append(c == '_' ? '-' : c);
            }
        }

        return text.ToString();
    }
}
