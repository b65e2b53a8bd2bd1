using System.Collections;
using System.Text.Json;
using KvStore.Server.Hosting;
using KvStore.Server.Options;
using Serilog.Events;
using Serilog.Parsing;

namespace KvStore.Server.Tests.Hosting;

/// <summary>--logger zap gives JSON lines with etcd's zap field names; text stays available.</summary>
public sealed class ZapJsonFormatterTests
{
    [Fact]
    public void A_log_event_is_one_json_line_with_zaps_fields()
    {
        var template = new MessageTemplateParser().Parse("leader changed to {LeaderId} at term {Term}");
        var logEvent = new LogEvent(
            new DateTimeOffset(2026, 1, 2, 3, 4, 5, 678, TimeSpan.Zero),
            LogEventLevel.Warning,
            new IOException("disk gone"),
            template,
            [
                new LogEventProperty("LeaderId", new ScalarValue("8e9e05c52164694d")),
                new LogEventProperty("Term", new ScalarValue(7UL)),
                new LogEventProperty("SourceContext", new ScalarValue("kvstore.raft")),
            ]);
        using var output = new StringWriter();
        new ZapJsonFormatter().Format(logEvent, output);

        var text = output.ToString();
        text.Should().EndWith("\n");
        text.Count(c => c == '\n').Should().Be(1, "one line per event");
        var json = JsonDocument.Parse(text).RootElement;
        json.GetProperty("level").GetString().Should().Be("warn");
        json.GetProperty("ts").GetString().Should().Be("2026-01-02T03:04:05.678Z");
        json.TryGetProperty("logger", out _).Should().BeFalse("zap names the origin in \"caller\"");
        json.GetProperty("msg").GetString().Should().Be("leader changed to 8e9e05c52164694d at term 7");
        json.GetProperty("leader-id").GetString().Should().Be("8e9e05c52164694d");
        json.GetProperty("term").GetUInt64().Should().Be(7);
        json.GetProperty("error").GetString().Should().Be("disk gone");
    }

    [Theory]
    [InlineData(new[] { "--logger=zap" }, "json")]
    [InlineData(new[] { "--logger=zap", "--log-format=text" }, "text")]
    [InlineData(new string[0], "text")]
    [InlineData(new[] { "--log-format=json" }, "json")]
    public void An_explicit_zap_logger_selects_json_unless_the_format_is_given(string[] args, string format) =>
        FlagParser.Parse(args, new Hashtable()).Options.LogFormat.Should().Be(format);
}
