using System.Security.Cryptography;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.EndToEnd.Cluster;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// Tokens over gRPC as clients hold them: a simple token kept across permission changes (effective at once), a token
/// of a deleted user, a forged token; JWTs issued by one member and accepted by the others of a 3-member cluster; and
/// the client certificate's CommonName as the user with --client-cert-auth.
/// </summary>
public sealed class AuthTokenTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly List<ServerProcess> _servers = [];
    private readonly string _dir = ServerProcess.CreateTempDir("kvstore-e2e-auth-");
    private TestCluster? _cluster;

    [Fact]
    public async Task A_held_simple_token_sees_permission_changes_at_once_and_dies_with_its_user()
    {
        var server = await StartAsync([]);
        await SetUpAsync(server.Endpoint);
        using var channel = GrpcChannel.ForAddress(server.ClientUrl);
        var auth = new Etcdserverpb.Auth.AuthClient(channel);
        var kv = new KV.KVClient(channel);
        var token = (await auth.AuthenticateAsync(new AuthenticateRequest { Name = "alice", Password = "apw" })).Token;
        token.Should().MatchRegex("^[a-zA-Z]{16}\\.[0-9]+$", "etcd's simple token shape");
        var alice = new Metadata { { "token", token } };

        (await kv.RangeAsync(Get("/app/x"), alice)).Kvs.Should().ContainSingle();
        await CtlOkAsync(server.Endpoint, "--user=root:rootpw", "user", "revoke-role", "alice", "reader");
        (await Failing(() => kv.RangeAsync(Get("/app/x"), alice).ResponseAsync)).Should().Be((StatusCode.PermissionDenied, "etcdserver: permission denied"));
        await CtlOkAsync(server.Endpoint, "--user=root:rootpw", "user", "grant-role", "alice", "reader");
        (await kv.RangeAsync(Get("/app/x"), alice)).Kvs.Should().ContainSingle("the same token works again once the role is back");

        await CtlOkAsync(server.Endpoint, "--user=root:rootpw", "user", "delete", "alice");
        (await Failing(() => kv.RangeAsync(Get("/app/x"), alice).ResponseAsync)).Should().Be((StatusCode.Unauthenticated, "etcdserver: invalid auth token"));
        (await Failing(() => kv.RangeAsync(Get("/app/x"), new Metadata { { "token", "forged.1" } }).ResponseAsync))
            .Should().Be((StatusCode.Unauthenticated, "etcdserver: invalid auth token"));
        (await Failing(() => auth.AuthenticateAsync(new AuthenticateRequest { Name = "root", Password = "wrong" }).ResponseAsync))
            .Should().Be((StatusCode.InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"));
        server.LogText().Should().NotContain("rootpw").And.NotContain("apw", "no password reaches the logs");
    }

    [Fact]
    public async Task A_jwt_issued_by_one_member_is_accepted_by_every_member_and_writes_need_a_current_one()
    {
        var priv = Path.Combine(_dir, "jwt.key");
        var pub = Path.Combine(_dir, "jwt.pub");
        using (var rsa = RSA.Create(2048))
        {
            await File.WriteAllTextAsync(priv, rsa.ExportPkcs8PrivateKeyPem());
            await File.WriteAllTextAsync(pub, rsa.ExportSubjectPublicKeyInfoPem());
        }

        _cluster = await TestCluster.StartAsync(output, 3, ["--bcrypt-cost", "4", "--auth-token", $"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=5m"]);
        var (m0, m2) = (_cluster.Members[0], _cluster.Members[2]);
        await SetUpAsync(m0.Endpoint);
        var token = (await new Etcdserverpb.Auth.AuthClient(m0.Channel).AuthenticateAsync(new AuthenticateRequest { Name = "bob", Password = "bpw" })).Token;
        token.Split('.').Should().HaveCount(3, "a JWT");
        var bob = new Metadata { { "token", token } };
        var kv2 = new KV.KVClient(m2.Channel);
        await kv2.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8("/app/w"), Value = ByteString.CopyFromUtf8("via-m2") }, bob);
        (await kv2.RangeAsync(Get("/app/w"), bob)).Kvs.Single().Value.ToStringUtf8().Should().Be("via-m2");

        await CtlOkAsync(m0.Endpoint, "--user=root:rootpw", "role", "add", "later");
        (await Failing(() => kv2.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8("/app/w"), Value = ByteString.CopyFromUtf8("x") }, bob).ResponseAsync))
            .Should().Be((StatusCode.InvalidArgument, "etcdserver: revision of auth store is old"), "the JWT carries the auth revision it was issued at");
    }

    [Fact]
    public async Task With_client_cert_auth_the_certificate_common_name_is_the_user()
    {
        var bash = Tools.Require("bash", "bash");
        var certs = await Tools.RunAsync(bash, [Path.Combine(ServerProcess.RepoRoot, "deploy", "certs", "make-certs.sh"), "-o", _dir, "-c", "alice", "e2e=127.0.0.1"], timeout: TimeSpan.FromSeconds(120));
        certs.ExitCode.Should().Be(0, certs.ToString());
        var m = Path.Combine(_dir, "e2e");
        var server = await StartAsync(
            [
                "--cert-file", Path.Combine(m, "server.crt"), "--key-file", Path.Combine(m, "server.key"),
                "--trusted-ca-file", Path.Combine(_dir, "ca.crt"), "--client-cert-auth",
            ],
            "https");
        string[] tls = ["--cacert", Path.Combine(_dir, "ca.crt"), "--cert", Path.Combine(_dir, "client.crt"), "--key", Path.Combine(_dir, "client.key")];
        await SetUpAsync(server.Endpoint, tls);

        (await CtlAsync(server.Endpoint, [.. tls, "get", "/app/x", "--print-value-only"])).Stdout.Should().Be("1\n", "alice (the certificate's CN) may read /app/");
        var denied = await CtlAsync(server.Endpoint, [.. tls, "put", "/app/x", "2"]);
        TestCluster.ErrorLine(denied).Should().Be("Error: etcdserver: permission denied");
        (await CtlAsync(server.Endpoint, [.. tls, "--user=root:rootpw", "put", "/app/x", "3"])).ExitCode.Should().Be(0, "a token wins over the certificate");
    }

    /// <summary>root (with the root role), alice reading /app/, bob writing /app/w; /app/x = 1; auth enabled.</summary>
    private static async Task SetUpAsync(string endpoint, params string[] tls)
    {
        foreach (var step in new[]
        {
            "user add root:rootpw", "user grant-role root root", "user add alice:apw", "user add bob:bpw",
            "role add reader", "role grant-permission reader read /app/ --prefix", "role add writer", "role grant-permission writer readwrite /app/w",
            "user grant-role alice reader", "user grant-role bob writer", "put /app/x 1", "auth enable",
        })
        {
            await CtlOkAsync(endpoint, [.. tls, .. step.Split(' ')]);
        }
    }

    private static RangeRequest Get(string key) => new() { Key = ByteString.CopyFromUtf8(key) };

    private static async Task<(StatusCode, string)> Failing(Func<Task> call)
    {
        var e = await call.Should().ThrowAsync<RpcException>();
        return (e.Which.StatusCode, e.Which.Status.Detail);
    }

    private async Task<ServerProcess> StartAsync(IReadOnlyList<string> args, string scheme = "http")
    {
        var server = new ServerProcess(extraArgs: ["--bcrypt-cost", "4", .. args], scheme: scheme) { ClientCertDir = scheme == "https" ? _dir : null };
        _servers.Add(server);
        await server.StartAsync();
        return server;
    }

    private static async Task<ProcessResult> CtlAsync(string endpoint, IEnumerable<string> args) =>
        await Tools.RunAsync(
            Tools.Require("etcdctl", "etcd-client"),
            ["--endpoints", endpoint, "--dial-timeout=5s", "--command-timeout=15s", .. args],
            env: new Dictionary<string, string> { ["ETCDCTL_API"] = "3" },
            timeout: TimeSpan.FromSeconds(60));

    private static async Task CtlOkAsync(string endpoint, params string[] args)
    {
        var r = await CtlAsync(endpoint, args);
        r.ExitCode.Should().Be(0, r.ToString());
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }

        foreach (var server in _servers)
        {
            output.WriteLine(server.LogText());
            server.Dispose();
        }

        _servers.Clear();
        ServerProcess.TryDelete(_dir);
    }
}
