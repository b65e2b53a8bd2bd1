using System.Globalization;
using System.Net;
using System.Text.Json;
using Etcdserverpb;
using Grpc.Net.Client;
using KvStore.EndToEnd.Cluster;

namespace KvStore.EndToEnd;

/// <summary>
/// The HTTP probes as etcd 3.5 serves them and kubeadm uses them: /health with its alarm, ?exclude= and
/// ?serializable= rules on the client port, and /health, /livez, /readyz, /metrics on --listen-metrics-urls.
/// </summary>
public sealed class HttpProbeTests : IDisposable
{
    private readonly int _metricsPort = LoopbackPorts.Take(1)[0];
    private readonly ServerProcess _server;

    public HttpProbeTests()
    {
        _server = new ServerProcess(extraArgs: ["--listen-metrics-urls", $"http://127.0.0.1:{_metricsPort}"]);
    }

    private string MetricsUrl => "http://127.0.0.1:" + _metricsPort.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task Health_reports_an_alarm_unless_excluded_and_the_metrics_port_serves_the_probes()
    {
        await _server.StartAsync();
        using var http = Tools.HttpClient(null);
        using var channel = GrpcChannel.ForAddress(_server.ClientUrl);
        var maintenance = new Maintenance.MaintenanceClient(channel);
        var memberId = (await maintenance.StatusAsync(new StatusRequest())).Header.MemberId;

        foreach (var path in new[] { "/livez", "/readyz", "/health", "/metrics" })
        {
            using var response = await http.GetAsync(new Uri(MetricsUrl + path));
            response.StatusCode.Should().Be(HttpStatusCode.OK, "{0} on the metrics port", path);
        }

        using (var other = await http.GetAsync(new Uri(MetricsUrl + "/version")))
        {
            other.StatusCode.Should().Be(HttpStatusCode.NotFound, "the metrics port serves only the probes and /metrics");
        }

        await maintenance.AlarmAsync(new AlarmRequest { Action = AlarmRequest.Types.AlarmAction.Activate, MemberID = memberId, Alarm = AlarmType.Nospace });
        foreach (var baseUrl in new[] { _server.ClientUrl, MetricsUrl })
        {
            (await HealthAsync(http, baseUrl + "/health")).Should().Be((HttpStatusCode.ServiceUnavailable, "false", "ALARM NOSPACE"));
            (await HealthAsync(http, baseUrl + "/health?exclude=NOSPACE")).Should().Be((HttpStatusCode.OK, "true", string.Empty));
            (await HealthAsync(http, baseUrl + "/health?exclude=CORRUPT&serializable=true")).Should().Be((HttpStatusCode.ServiceUnavailable, "false", "ALARM NOSPACE"));
        }

        await maintenance.AlarmAsync(new AlarmRequest { Action = AlarmRequest.Types.AlarmAction.Deactivate, MemberID = memberId, Alarm = AlarmType.Nospace });
        (await HealthAsync(http, _server.ClientUrl + "/health")).Should().Be((HttpStatusCode.OK, "true", string.Empty));
    }

    public void Dispose() => _server.Dispose();

    private static async Task<(HttpStatusCode Status, string Health, string Reason)> HealthAsync(HttpClient http, string url)
    {
        using var response = await http.GetAsync(new Uri(url));
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, doc.RootElement.GetProperty("health").GetString()!, doc.RootElement.TryGetProperty("reason", out var r) ? r.GetString()! : string.Empty);
    }
}
