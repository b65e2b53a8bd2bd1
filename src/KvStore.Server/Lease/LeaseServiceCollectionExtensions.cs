using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Server.Peer;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Lease;

/// <summary>Registers the lessor, its expiry loop and the lease applier.</summary>
public static class LeaseServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="Lessor"/> (also as <see cref="ILeaseApplier"/>), <see cref="LeaseExpiryLoop"/> and defaults for
    /// <see cref="ILeaderStatus"/> (single member) and <see cref="TimeProvider"/>, and the leader-only request path
    /// (<see cref="LeaderLeaseOps"/>, <see cref="LeaseForwarder"/>, which need the raft host and peer transport). Needs <see cref="MvccStore"/> and
    /// <c>IProposer</c> registered. The lessor rebuilds from the store when first resolved, which must happen after the
    /// store is opened and before the WAL tail is replayed through the applier.
    /// </summary>
    public static IServiceCollection AddLeases(this IServiceCollection services, Func<IServiceProvider, LessorOptions>? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<ILeaderStatus, SingleMemberLeaderStatus>();
        services.TryAddSingleton(sp => options?.Invoke(sp) ?? new LessorOptions());
        services.TryAddSingleton(sp =>
        {
            var lessor = new Lessor(
                sp.GetRequiredService<LessorOptions>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<Lessor>>());
            lessor.Recover(new MvccLeaseRecoverySource(sp.GetRequiredService<MvccStore>()));
            return lessor;
        });
        services.TryAddSingleton<ILeaseApplier>(sp => sp.GetRequiredService<Lessor>());
        services.AddSingleton<IStoreRestoredHandler>(sp => sp.GetRequiredService<Lessor>());
        services.AddHostedService<LeaseExpiryLoop>();
        services.TryAddSingleton<LeaderLeaseOps>();
        services.TryAddSingleton<LeaseForwarder>();
        return services;
    }

    /// <summary>
    /// Maps <see cref="PeerLeaseService"/> (the leader's side of lease forwarding) so that it answers only connections
    /// for which <paramref name="isPeerConnection"/> is true; elsewhere it looks like an unknown service.
    /// </summary>
    public static void MapLeaseForwarding(this IEndpointRouteBuilder endpoints, Func<HttpContext, bool> isPeerConnection) =>
        endpoints.MapGrpcServiceOnPeerPort<PeerLeaseService>(isPeerConnection);
}
