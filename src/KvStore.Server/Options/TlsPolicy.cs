using System.Net.Security;
using System.Security.Authentication;

namespace KvStore.Server.Options;

/// <summary>
/// --tls-min-version, --tls-max-version and --cipher-suites as etcd spells them ("TLS1.2", "TLS1.3"; Go's/IANA cipher
/// suite names such as TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), for every TLS endpoint of the member: client and peer
/// listeners and the member's own connections to its peers. TLS 1.2 is the minimum by default, as in etcd.
/// </summary>
public sealed class TlsPolicy
{
    private static readonly Dictionary<string, SslProtocols> Versions = new(StringComparer.Ordinal)
    {
        ["TLS1.2"] = SslProtocols.Tls12,
        ["TLS1.3"] = SslProtocols.Tls13,
    };

    private TlsPolicy(SslProtocols protocols, IReadOnlyList<TlsCipherSuite> cipherSuites)
    {
        Protocols = protocols;
        CipherSuites = cipherSuites;
    }

    /// <summary>The TLS versions allowed.</summary>
    public SslProtocols Protocols { get; }

    /// <summary>The TLS 1.2 cipher suites allowed; empty = the platform's secure defaults.</summary>
    public IReadOnlyList<TlsCipherSuite> CipherSuites { get; }

    /// <summary>The cipher suite policy for SslStream, or null for the defaults.</summary>
    public CipherSuitesPolicy? CipherSuitesPolicy => CipherSuites.Count == 0 || OperatingSystem.IsWindows() ? null : new CipherSuitesPolicy(CipherSuites);

    /// <summary>Builds the policy from the flags; throws <see cref="OptionsException"/> with etcd-like messages.</summary>
    public static TlsPolicy From(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var min = Version(options.TlsMinVersion, "tls-min-version") ?? SslProtocols.Tls12;
        var max = Version(options.TlsMaxVersion, "tls-max-version") ?? SslProtocols.Tls13;
        if (max < min)
        {
            throw new OptionsException($"min version ({options.TlsMinVersion}) is greater than max version ({options.TlsMaxVersion})");
        }

        var protocols = min == max ? min : SslProtocols.Tls12 | SslProtocols.Tls13;
        var suites = new List<TlsCipherSuite>();
        foreach (var name in options.CipherSuites.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!name.StartsWith("TLS_", StringComparison.Ordinal) || !Enum.TryParse<TlsCipherSuite>(name, out var suite))
            {
                throw new OptionsException($"unexpected TLS cipher suite \"{name}\"");
            }

            suites.Add(suite);
        }

        if (suites.Count > 0 && OperatingSystem.IsWindows())
        {
            throw new OptionsException("--cipher-suites is not supported on Windows (SChannel takes them from the system policy)");
        }

        if (suites.Count > 0 && min == SslProtocols.Tls13)
        {
            // TLS 1.3 suites are not configurable (etcd refuses the combination the same way).
            throw new OptionsException("cipher suites cannot be configured when only TLS1.3 is enabled");
        }

        if (suites.Count > 0 && protocols.HasFlag(SslProtocols.Tls13))
        {
            // Keep TLS 1.3 usable: its suites are fixed by the protocol and must stay in the allowed list.
            suites.AddRange([TlsCipherSuite.TLS_AES_128_GCM_SHA256, TlsCipherSuite.TLS_AES_256_GCM_SHA384, TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256]);
        }

        return new TlsPolicy(protocols, suites);
    }

    private static SslProtocols? Version(string value, string flag)
    {
        if (value.Length == 0)
        {
            return null;
        }

        return Versions.TryGetValue(value, out var version)
            ? version
            : throw new OptionsException($"unexpected TLS version \"{value}\" for --{flag} (supported versions: TLS1.2 and TLS1.3)");
    }
}
