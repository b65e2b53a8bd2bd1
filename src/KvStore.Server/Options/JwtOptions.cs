using System.Globalization;

namespace KvStore.Server.Options;

/// <summary>The options of --auth-token jwt,... (etcd's syntax).</summary>
/// <param name="SignMethod">RS256/384/512, PS256/384/512 or ES256/384/512.</param>
/// <param name="PublicKeyFile">PEM public key (optional when a private key is given).</param>
/// <param name="PrivateKeyFile">PEM private key (optional: without it the member only verifies).</param>
/// <param name="Ttl">Token lifetime (etcd's default: 5 minutes).</param>
public sealed record JwtOptions(string SignMethod, string PublicKeyFile, string PrivateKeyFile, TimeSpan Ttl)
{
    private static readonly string[] Methods = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"];

    /// <summary>Parses "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=..."; throws <see cref="FormatException"/> with the reason.</summary>
    public static JwtOptions Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string method = string.Empty, pub = string.Empty, priv = string.Empty;
        var ttl = TimeSpan.FromMinutes(5);
        foreach (var part in spec.Split(',').Skip(1))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            var (name, value) = eq < 0 ? (part, string.Empty) : (part[..eq], part[(eq + 1)..]);
            switch (name)
            {
                case "sign-method":
                    method = value;
                    break;
                case "pub-key":
                    pub = value;
                    break;
                case "priv-key":
                    priv = value;
                    break;
                case "ttl":
                    if (!GoValues.TryParseDuration(value, out ttl) || ttl <= TimeSpan.Zero)
                    {
                        throw new FormatException($"invalid ttl {value} in --auth-token");
                    }

                    break;
                default:
                    throw new FormatException($"unknown token option {part} in --auth-token");
            }
        }

        if (!Methods.Contains(method))
        {
            throw new FormatException(string.Create(CultureInfo.InvariantCulture,
                $"--auth-token jwt needs sign-method= one of {string.Join(", ", Methods)} (got '{method}')"));
        }

        if (pub.Length == 0 && priv.Length == 0)
        {
            throw new FormatException("--auth-token jwt needs pub-key= and/or priv-key=");
        }

        return new JwtOptions(method, pub, priv, ttl);
    }
}
