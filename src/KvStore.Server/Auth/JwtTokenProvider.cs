using System.Globalization;
using System.Security.Cryptography;
using KvStore.Server.Options;
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
