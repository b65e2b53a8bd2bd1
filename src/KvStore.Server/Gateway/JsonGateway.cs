using System.Text;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace KvStore.Server.Gateway;

/// <summary>
/// etcd's grpc-gateway: the v3 API as JSON over HTTP/1.1 on the client port (POST /v3/kv/put with
/// <c>{"key":"Zm9v","value":"YmFy"}</c>). Like etcd's gateway it calls this member's own gRPC endpoint, so
/// authentication (the Authorization header becomes the token), interceptors and metrics apply as to any client.
/// JSON as the gateway writes it: proto field names, bytes in base64, 64-bit integers as strings, defaults left out;
/// errors as <c>{"error","message","code"}</c> with the HTTP status grpc-gateway maps the gRPC code to. Streams
/// (watch, lease keep-alive) answer one <c>{"result":...}</c> JSON object per line.
/// </summary>
public static class JsonGateway
{
    private static readonly JsonFormatter Formatter = new(JsonFormatter.Settings.Default.WithPreserveProtoFieldNames(true));

    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(true));

    /// <summary>Gateway paths (after the version prefix) and the RPC each one calls.</summary>
    private static readonly (string Path, string Service, string Method)[] Routes =
    [
        ("kv/range", "KV", "Range"),
        ("kv/put", "KV", "Put"),
        ("kv/deleterange", "KV", "DeleteRange"),
        ("kv/txn", "KV", "Txn"),
        ("kv/compaction", "KV", "Compact"),
        ("watch", "Watch", "Watch"),
        ("lease/grant", "Lease", "LeaseGrant"),
        ("lease/revoke", "Lease", "LeaseRevoke"),
        ("kv/lease/revoke", "Lease", "LeaseRevoke"),
        ("lease/keepalive", "Lease", "LeaseKeepAlive"),
        ("lease/timetolive", "Lease", "LeaseTimeToLive"),
        ("kv/lease/timetolive", "Lease", "LeaseTimeToLive"),
        ("lease/leases", "Lease", "LeaseLeases"),
        ("kv/lease/leases", "Lease", "LeaseLeases"),
        ("cluster/member/add", "Cluster", "MemberAdd"),
        ("cluster/member/remove", "Cluster", "MemberRemove"),
        ("cluster/member/update", "Cluster", "MemberUpdate"),
        ("cluster/member/list", "Cluster", "MemberList"),
        ("cluster/member/promote", "Cluster", "MemberPromote"),
        ("maintenance/alarm", "Maintenance", "Alarm"),
        ("maintenance/status", "Maintenance", "Status"),
        ("maintenance/defragment", "Maintenance", "Defragment"),
        ("maintenance/hash", "Maintenance", "Hash"),
        ("maintenance/hashkv", "Maintenance", "HashKV"),
        ("maintenance/transfer-leadership", "Maintenance", "MoveLeader"),
        ("auth/enable", "Auth", "AuthEnable"),
        ("auth/disable", "Auth", "AuthDisable"),
        ("auth/status", "Auth", "AuthStatus"),
        ("auth/authenticate", "Auth", "Authenticate"),
        ("auth/user/add", "Auth", "UserAdd"),
        ("auth/user/get", "Auth", "UserGet"),
        ("auth/user/list", "Auth", "UserList"),
        ("auth/user/delete", "Auth", "UserDelete"),
        ("auth/user/changepw", "Auth", "UserChangePassword"),
        ("auth/user/grant", "Auth", "UserGrantRole"),
        ("auth/user/revoke", "Auth", "UserRevokeRole"),
        ("auth/role/add", "Auth", "RoleAdd"),
        ("auth/role/get", "Auth", "RoleGet"),
        ("auth/role/list", "Auth", "RoleList"),
        ("auth/role/delete", "Auth", "RoleDelete"),
        ("auth/role/grant", "Auth", "RoleGrantPermission"),
        ("auth/role/revoke", "Auth", "RoleRevokePermission"),
    ];

    /// <summary>Maps every gateway path under /v3/ (and etcd 3.4's /v3beta/).</summary>
    public static void Map(IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var services = Etcdserverpb.RpcReflection.Descriptor.Services.ToDictionary(s => s.Name, StringComparer.Ordinal);
        foreach (var (path, service, name) in Routes)
        {
            var method = services[service].FindMethodByName(name) ?? throw new InvalidOperationException($"etcdserverpb.{service} has no {name}");
            var handler = method.IsClientStreaming ? Stream(method) : Unary(method);
            foreach (var prefix in new[] { "/v3/", "/v3beta/" })
            {
                endpoints.MapPost(prefix + path, handler);
            }
        }
    }

    private static RequestDelegate Unary(MethodDescriptor descriptor)
    {
        var method = GrpcMethod(descriptor, MethodType.Unary);
        return async context =>
        {
            if (await ReadRequestAsync(context, descriptor) is not { } request)
            {
                return;
            }

            var invoker = context.RequestServices.GetRequiredService<LoopbackChannel>().Invoker;
            IMessage response;
            try
            {
                response = await invoker.AsyncUnaryCall(method, null, Options(context), request);
            }
            catch (RpcException e)
            {
                await WriteErrorAsync(context, e.StatusCode, e.Status.Detail);
                return;
            }

            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(Format(response), context.RequestAborted);
        };
    }

    /// <summary>Watch and lease keep-alive: the body's request is sent, each response is one line. A watch stays
    /// open until the client goes away; a keep-alive ends after its answer.</summary>
    private static RequestDelegate Stream(MethodDescriptor descriptor)
    {
        var method = GrpcMethod(descriptor, MethodType.DuplexStreaming);
        var keepOpen = descriptor.Name == "Watch";
        return async context =>
        {
            if (await ReadRequestAsync(context, descriptor) is not { } request)
            {
                return;
            }

            var invoker = context.RequestServices.GetRequiredService<LoopbackChannel>().Invoker;
            using var call = invoker.AsyncDuplexStreamingCall(method, null, Options(context));
            try
            {
                await call.RequestStream.WriteAsync(request, context.RequestAborted);
                if (!keepOpen)
                {
                    await call.RequestStream.CompleteAsync();
                }

                context.Response.ContentType = "application/json";
                await context.Response.StartAsync(context.RequestAborted);
                while (await call.ResponseStream.MoveNext(context.RequestAborted))
                {
                    await context.Response.WriteAsync("{\"result\":" + Format(call.ResponseStream.Current) + "}\n", context.RequestAborted);
                    await context.Response.Body.FlushAsync(context.RequestAborted);
                }
            }
            catch (RpcException e) when (!context.Response.HasStarted)
            {
                await WriteErrorAsync(context, e.StatusCode, e.Status.Detail);
            }
            catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
            {
                // Inside a stream grpc-gateway reports the error as one more line.
                var http = HttpStatus(e.StatusCode);
                var error = $"{{\"error\":{{\"grpc_code\":{(int)e.StatusCode},\"http_code\":{http},\"message\":{Quote(e.Status.Detail)},\"http_status\":{Quote(ReasonPhrases(http))}}}}}\n";
                await context.Response.WriteAsync(error, CancellationToken.None);
            }
            catch (Exception e) when (e is OperationCanceledException or RpcException && context.RequestAborted.IsCancellationRequested)
            {
                // The client went away: the call is cancelled with it.
            }
        };
    }

    private static async Task<IMessage?> ReadRequestAsync(HttpContext context, MethodDescriptor descriptor)
    {
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        var body = await reader.ReadToEndAsync(context.RequestAborted);
        try
        {
            return string.IsNullOrWhiteSpace(body)
                ? descriptor.InputType.Parser.ParseFrom(ByteString.Empty)
                : Parser.Parse(body, descriptor.InputType);
        }
        catch (InvalidProtocolBufferException e)
        {
            await WriteErrorAsync(context, StatusCode.InvalidArgument, e.Message);
            return null;
        }
        catch (InvalidJsonException e)
        {
            await WriteErrorAsync(context, StatusCode.InvalidArgument, e.Message);
            return null;
        }
    }

    /// <summary>The Authorization header is the auth token, as etcd's gateway passes it on.</summary>
    private static CallOptions Options(HttpContext context)
    {
        var headers = new Metadata();
        if (context.Request.Headers.Authorization.ToString() is { Length: > 0 } token)
        {
            headers.Add("token", token);
        }

        return new CallOptions(headers, cancellationToken: context.RequestAborted);
    }

    private static Task WriteErrorAsync(HttpContext context, StatusCode code, string message)
    {
        context.Response.StatusCode = HttpStatus(code);
        context.Response.ContentType = "application/json";
        var text = Quote(message);
        return context.Response.WriteAsync($"{{\"error\":{text},\"message\":{text},\"code\":{(int)code}}}", context.RequestAborted);
    }

    /// <summary>grpc-gateway's mapping of gRPC codes to HTTP statuses.</summary>
    private static int HttpStatus(StatusCode code) => code switch
    {
        StatusCode.OK => StatusCodes.Status200OK,
        StatusCode.Cancelled => StatusCodes.Status408RequestTimeout,
        StatusCode.InvalidArgument or StatusCode.FailedPrecondition or StatusCode.OutOfRange => StatusCodes.Status400BadRequest,
        StatusCode.DeadlineExceeded => StatusCodes.Status504GatewayTimeout,
        StatusCode.NotFound => StatusCodes.Status404NotFound,
        StatusCode.AlreadyExists or StatusCode.Aborted => StatusCodes.Status409Conflict,
        StatusCode.PermissionDenied => StatusCodes.Status403Forbidden,
        StatusCode.Unauthenticated => StatusCodes.Status401Unauthorized,
        StatusCode.ResourceExhausted => StatusCodes.Status429TooManyRequests,
        StatusCode.Unimplemented => StatusCodes.Status501NotImplemented,
        StatusCode.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status500InternalServerError,
    };

    /// <summary>Compact JSON, as grpc-gateway writes it (the protobuf formatter puts spaces between tokens).</summary>
    private static string Format(IMessage message) => System.Text.Json.Nodes.JsonNode.Parse(Formatter.Format(message))!.ToJsonString();

    private static string ReasonPhrases(int status) => Microsoft.AspNetCore.WebUtilities.ReasonPhrases.GetReasonPhrase(status);

    private static string Quote(string text) => System.Text.Json.JsonSerializer.Serialize(text, GatewayJson.Default.String);

    private static Method<IMessage, IMessage> GrpcMethod(MethodDescriptor descriptor, MethodType type) => new(
        type,
        descriptor.Service.FullName,
        descriptor.Name,
        Marshallers.Create<IMessage>(m => m.ToByteArray(), bytes => descriptor.InputType.Parser.ParseFrom(bytes)),
        Marshallers.Create<IMessage>(m => m.ToByteArray(), bytes => descriptor.OutputType.Parser.ParseFrom(bytes)));
}

/// <summary>Source-generated JSON for the gateway's quoted strings (no reflection at run time, so native AOT builds serve them too).</summary>
[System.Text.Json.Serialization.JsonSerializable(typeof(string))]
internal sealed partial class GatewayJson : System.Text.Json.Serialization.JsonSerializerContext;
