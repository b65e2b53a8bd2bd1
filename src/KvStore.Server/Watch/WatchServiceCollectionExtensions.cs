using KvStore.Server.Apply;
using KvStore.Server.Node;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace KvStore.Server.Watch;

/// <summary>Registers the watch hub.</summary>
public static class WatchServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="WatchHub"/> (also as <see cref="IWatchEventSink"/>), its catch-up loop, and defaults for
    /// <see cref="ILeaderStatus"/> and <see cref="TimeProvider"/>. Needs <see cref="MvccStore"/> registered.
    /// </summary>
    public static IServiceCollection AddWatch(this IServiceCollection services, Func<IServiceProvider, WatchOptions>? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<ILeaderStatus, SingleMemberLeaderStatus>();
        services.TryAddSingleton(sp => options?.Invoke(sp) ?? new WatchOptions());
        services.TryAddSingleton<IWatchableStore>(sp => new MvccWatchableStore(sp.GetRequiredService<MvccStore>()));
        services.TryAddSingleton(sp => new WatchHub(
            sp.GetRequiredService<IWatchableStore>(), sp.GetRequiredService<WatchOptions>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<WatchHub>>()));
        services.TryAddSingleton<IWatchEventSink>(sp => sp.GetRequiredService<WatchHub>());
        services.AddSingleton<IStoreRestoredHandler>(sp => sp.GetRequiredService<WatchHub>());
        services.AddHostedService<WatchSyncLoop>();
        return services;
    }
}
