using KvStore.Server.Apply;
using Grpc.Core;
using KvStore.Server.Monitoring;
using KvStore.Server.Node;
using KvStore.Storage.Mvcc;
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
        endpoints.MapGet("/metrics", async (HttpContext context, ServerMetrics metrics) =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await metrics.ExportAsync(context.Response.Body, context.RequestAborted);
        });
    }

    /// <summary>
    /// etcd 3.5's /health: unhealthy (503) with the reason when an alarm is active (except those named by
    /// ?exclude=NOSPACE, repeatable), when there is no leader (not asked with ?serializable=true), or when a read
    /// fails within the request timeout — linearizable by default, local with ?serializable=true.
    /// </summary>
    private static async Task<IResult> Health(HttpContext context, NodeState state, AlarmState alarms, IReplicationProgress replication, ILinearizableReads reads, MvccStore store)
    {
        var excluded = context.Request.Query["exclude"].Select(v => v?.ToUpperInvariant()).ToHashSet();
        var serializable = string.Equals(context.Request.Query["serializable"], "true", StringComparison.OrdinalIgnoreCase);
        var alarm = alarms.List(Etcdserverpb.AlarmType.None)
            .Select(a => a.Alarm.ToString().ToUpperInvariant())
            .FirstOrDefault(name => !excluded.Contains(name));
        var reason = alarm is not null ? "ALARM " + alarm
            : !serializable && !state.HasLeader ? "RAFT NO LEADER"
            : !await ReadsAsync(replication, reads, store, serializable, context.RequestAborted) ? "QGET ERROR"
            : string.Empty;
        var healthy = reason.Length == 0;
        return Results.Text(
            $"{{\"health\":\"{(healthy ? "true" : "false")}\",\"reason\":\"{reason}\"}}",
            "application/json",
            statusCode: healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>A one-key read as a client's: after the read barrier unless serializable; false on failure or timeout.</summary>
    private static async Task<bool> ReadsAsync(IReplicationProgress replication, ILinearizableReads reads, MvccStore store, bool serializable, CancellationToken aborted)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        timeout.CancelAfter(replication.RequestTimeout);
        try
        {
            if (!serializable)
            {
                await reads.WaitForReadIndexAsync(timeout.Token);
            }

            store.Range([0], [0], new RangeOptions(Limit: 1, KeysOnly: true));
            return true;
        }
        catch (Exception e) when (e is RpcException or OperationCanceledException)
        {
            return false;
        }
    }

    private static IResult Ready(NodeState state) =>
        state.HasLeader ? Results.Text("ok", "text/plain") : Results.Text("[-]leader failed\nreadyz check failed", "text/plain", statusCode: StatusCodes.Status503ServiceUnavailable);

    private static IResult Live() => Results.Text("ok", "text/plain");
}
