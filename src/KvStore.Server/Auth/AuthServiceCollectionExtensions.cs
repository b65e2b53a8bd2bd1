using KvStore.Server.Options;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace KvStore.Server.Auth;

/// <summary>Registers the auth store, the token provider chosen by --auth-token and the request authenticator.</summary>
public static class AuthServiceCollectionExtensions
{
    public static IServiceCollection AddAuth(this IServiceCollection services, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(options);
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<AuthStore>();
        services.AddSingleton<IMemberCredentials>(sp => sp.GetRequiredService<AuthStore>());
        services.AddSingleton(sp => CreateTokenProvider(options, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<RequestAuthenticator>();
        services.AddSingleton<AdminOnlyInterceptor>();
        return services;
    }

    /// <summary>The provider for --auth-token (validated when the flags were parsed).</summary>
    public static ITokenProvider CreateTokenProvider(ServerOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.AuthToken.StartsWith("jwt", StringComparison.Ordinal)
            ? new JwtTokenProvider(JwtOptions.Parse(options.AuthToken), time)
            : new SimpleTokenProvider(TimeSpan.FromSeconds(options.AuthTokenTtlSeconds), time);
    }
}
