using KvStore.Server.Auth;

namespace KvStore.Server.Tests.Auth;

/// <summary>The admin-only check is registered on the Maintenance and Cluster services only (Hosting/ServerHost.cs).</summary>
public sealed class AdminOnlyMethodsTests
{
    [Fact]
    public void Every_admin_only_method_belongs_to_a_service_the_check_is_registered_on()
    {
        var checkedServices = new[] { "etcdserverpb.Maintenance", "etcdserverpb.Cluster" };
        var adminOnly = Etcdserverpb.RpcReflection.Descriptor.Services
            .SelectMany(service => service.Methods.Select(method => (Service: service.FullName, Path: $"/{service.FullName}/{method.Name}")))
            .Where(m => AdminOnlyInterceptor.IsAdminOnly(m.Path))
            .ToList();

        adminOnly.Select(m => m.Path).Should().Contain(["/etcdserverpb.Maintenance/Defragment", "/etcdserverpb.Cluster/MemberAdd"]);
        adminOnly.Should().OnlyContain(m => checkedServices.Contains(m.Service), "a method of another service would go unchecked");
    }
}
