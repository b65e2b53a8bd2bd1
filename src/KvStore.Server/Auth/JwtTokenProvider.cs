using System.Globalization;
using System.Security.Cryptography;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace KvStore.Server.Auth;

/// <summary>
/// etcd's "jwt" tokens: signed with the private key (RS*, PS* or ES*), carrying the user name, the auth revision at
/// issue and an expiry; any member holding the public key accepts them, with no registry. A token issued before an
/// auth change carries an older revision, so writes checked with it fail with "revision of auth store is old" and
/// clients re-authenticate, as with etcd.
/// </summary>
public sealed class JwtTokenProvider : ITokenProvider
{
    private readonly JsonWebTokenHandler _handler = new() { SetDefaultTimesOnTokenCreation = false };
    private readonly SigningCredentials? _signing;
    private readonly TokenValidationParameters _validation;
    private readonly TimeSpan _ttl;
    private readonly TimeProvider _time;

    public JwtTokenProvider(JwtOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        _ttl = options.Ttl;
        _time = time;
        var (verifyKey, signKey) = LoadKeys(options);
        _signing = signKey is null ? null : new SigningCredentials(signKey, options.SignMethod);
        _validation = new TokenValidationParameters
        {
            IssuerSigningKey = verifyKey,
            ValidAlgorithms = [options.SignMethod],
            ValidateIssuer = false,
            ValidateAudience = false,
            ValidateLifetime = true,
            RequireExpirationTime = true,
            ClockSkew = TimeSpan.Zero,
            LifetimeValidator = (notBefore, expires, _, _) => expires is { } e && e > _time.GetUtcNow().UtcDateTime,
        };
    }

    public string NewTokenPrefix() => string.Empty;

    public string Assign(string username, ulong revision, string prefix, ulong index)
    {
        if (_signing is null)
        {
            throw new InvalidOperationException("--auth-token jwt has no priv-key: this member can verify tokens but not issue them");
        }

        return _handler.CreateToken(new SecurityTokenDescriptor
        {
            Claims = new Dictionary<string, object> { ["username"] = username, ["revision"] = checked((long)revision) },
            Expires = (_time.GetUtcNow() + _ttl).UtcDateTime,
            SigningCredentials = _signing,
        });
    }

    public AuthInfo? Info(string token, ulong currentRevision)
    {
        // JsonWebTokenHandler validates synchronously when keys are given directly (no metadata to fetch).
        var result = _handler.ValidateTokenAsync(token, _validation).GetAwaiter().GetResult();
        if (!result.IsValid || result.SecurityToken is not JsonWebToken jwt ||
            !jwt.TryGetPayloadValue<string>("username", out var username) || !jwt.TryGetPayloadValue<long>("revision", out var revision) || revision <= 0)
        {
            return null;
        }

        return new AuthInfo(username, (ulong)revision);
    }

    public void InvalidateUser(string username)
    {
        // Nothing to drop: a JWT stays valid until it expires; a deleted user fails the permission check instead.
    }

    public void InvalidateAll()
    {
    }

    private static (SecurityKey Verify, SecurityKey? Sign) LoadKeys(JwtOptions options)
    {
        var family = options.SignMethod[..2];
        if (family is "RS" or "PS")
        {
            var pub = RSA.Create();
            RSA? priv = null;
            if (options.PrivateKeyFile.Length > 0)
            {
                priv = RSA.Create();
                priv.ImportFromPem(File.ReadAllText(options.PrivateKeyFile));
            }

            if (options.PublicKeyFile.Length > 0)
            {
                pub.ImportFromPem(File.ReadAllText(options.PublicKeyFile));
            }
            else
            {
                pub.ImportParameters(priv!.ExportParameters(false));
            }

            return (new RsaSecurityKey(pub), priv is null ? null : new RsaSecurityKey(priv));
        }

        var ecPub = ECDsa.Create();
        ECDsa? ecPriv = null;
        if (options.PrivateKeyFile.Length > 0)
        {
            ecPriv = ECDsa.Create();
            ecPriv.ImportFromPem(File.ReadAllText(options.PrivateKeyFile));
        }

        if (options.PublicKeyFile.Length > 0)
        {
            ecPub.ImportFromPem(File.ReadAllText(options.PublicKeyFile));
        }
        else
        {
            ecPub.ImportParameters(ecPriv!.ExportParameters(false));
        }

        return (new ECDsaSecurityKey(ecPub), ecPriv is null ? null : new ECDsaSecurityKey(ecPriv));
    }
}

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
                    if (!Options.GoValues.TryParseDuration(value, out ttl) || ttl <= TimeSpan.Zero)
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
