using KvStore.Server.Apply;
using KvStore.Server.Hosting;
using KvStore.Server.Node;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace KvStore.Server.Http;

/// <summary>etcd's plain HTTP endpoints on the client (and metrics) ports: /health, /readyz, /livez, /version, /metrics.</summary>
public static class HttpEndpoints
{
    public static void Map(IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        endpoints.MapGet("/health", Health);
        endpoints.MapGet("/readyz", Ready);
        endpoints.MapGet("/livez", Live);
        endpoints.MapGet("/version", () => Results.Text(
            $"{{\"etcdserver\":\"{Versions.EtcdServer}\",\"etcdcluster\":\"{Versions.EtcdCluster}\"}}", "application/json"));
        endpoints.MapGet("/metrics", (Metrics metrics) => Results.Text(metrics.Render(), "text/plain; version=0.0.4; charset=utf-8"));
    }

    private static IResult Health(NodeState state, AlarmState alarms)
    {
        var raised = alarms.List(Etcdserverpb.AlarmType.None);
        var alarm = raised.Count > 0 ? raised[0] : null;
        var reason = !state.HasLeader ? "RAFT NO LEADER"
            : alarm is not null ? "ALARM " + alarm.Alarm.ToString().ToUpperInvariant()
            : string.Empty;
        var healthy = reason.Length == 0;
        return Results.Text(
            $"{{\"health\":\"{(healthy ? "true" : "false")}\",\"reason\":\"{reason}\"}}",
            "application/json",
            statusCode: healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    private static IResult Ready(NodeState state) =>
        state.HasLeader ? Results.Text("ok", "text/plain") : Results.Text("[-]leader failed\nreadyz check failed", "text/plain", statusCode: StatusCodes.Status503ServiceUnavailable);

    private static IResult Live() => Results.Text("ok", "text/plain");
}
