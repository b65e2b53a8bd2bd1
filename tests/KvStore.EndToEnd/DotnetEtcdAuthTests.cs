using Authpb;
using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// The auth lifecycle through the dotnet-etcd client (10.0.0) as an application uses it: users, a role and its
/// permission, auth enabled, then a client built with a user's credentials (the client authenticates and sends the
/// token itself) doing what its role allows and being refused the rest with etcd's errors.
/// </summary>
public sealed class DotnetEtcdAuthTests(ITestOutputHelper output) : IAsyncLifetime, IDisposable
{
    private readonly ServerProcess _server = new(extraArgs: ["--bcrypt-cost", "4"]);

    public Task InitializeAsync() => _server.StartAsync();

    public Task DisposeAsync()
    {
        output.WriteLine(_server.LogText());
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose() => _server.Dispose();

    [Fact]
    public async Task Users_roles_and_permissions_through_dotnet_etcd()
    {
        using (var admin = new EtcdClient(_server.ClientUrl))
        {
            await admin.UserAddAsync(new AuthUserAddRequest { Name = "root", Password = "rootpw" });
            await admin.UserGrantRoleAsync(new AuthUserGrantRoleRequest { User = "root", Role = "root" });
            await admin.RoleAddAsync(new AuthRoleAddRequest { Name = "app" });
            await admin.RoleGrantPermissionAsync(new AuthRoleGrantPermissionRequest
            {
                Name = "app",
                Perm = new Permission { Key = ByteString.CopyFromUtf8("/app/"), RangeEnd = ByteString.CopyFromUtf8("/app0"), PermType = Permission.Types.Type.Readwrite },
            });
            await admin.UserAddAsync(new AuthUserAddRequest { Name = "alice", Password = "alicepw" });
            await admin.UserGrantRoleAsync(new AuthUserGrantRoleRequest { User = "alice", Role = "app" });
            await admin.AuthEnableAsync(new AuthEnableRequest());

            (await Refused(() => admin.PutAsync("/app/x", "anonymous"))).Should().Be((StatusCode.InvalidArgument, "etcdserver: user name is empty"));
        }

        using var alice = new EtcdClient(_server.ClientUrl);
        alice.SetCredentials("alice", "alicepw");
        await alice.PutAsync("/app/x", "1");
        (await alice.GetValAsync("/app/x")).Should().Be("1");
        (await Refused(() => alice.PutAsync("/other", "1"))).Should().Be((StatusCode.PermissionDenied, "etcdserver: permission denied"));
        (await Refused(() => alice.GetAsync("/other"))).Should().Be((StatusCode.PermissionDenied, "etcdserver: permission denied"));
        (await Refused(() => alice.UserAddAsync(new AuthUserAddRequest { Name = "mallory", Password = "x" }))).Should()
            .Be((StatusCode.PermissionDenied, "etcdserver: permission denied"), "only root manages users");

        using var root = new EtcdClient(_server.ClientUrl);
        root.SetCredentials("root", "rootpw");
        (await root.GetValAsync("/app/x")).Should().Be("1");
        await root.UserDeleteAsync(new AuthUserDeleteRequest { Name = "alice" });
        (await Refused(() => alice.GetAsync("/app/x"))).Code.Should().BeOneOf(StatusCode.Unauthenticated, StatusCode.InvalidArgument);

        using var wrong = new EtcdClient(_server.ClientUrl);
        wrong.SetCredentials("root", "wrong");
        (await Refused(() => wrong.GetAsync("/app/x"))).Should().Be((StatusCode.InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"));
    }

    private static async Task<(StatusCode Code, string Detail)> Refused(Func<Task> call)
    {
        try
        {
            await call();
        }
        catch (RpcException e)
        {
            return (e.StatusCode, e.Status.Detail);
        }

        throw new InvalidOperationException("the call was expected to be refused");
    }
}
