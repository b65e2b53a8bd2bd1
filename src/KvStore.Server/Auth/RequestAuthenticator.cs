using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Options;

namespace KvStore.Server.Auth;

/// <summary>
/// Finds who sends a gRPC call (etcd's AuthInfoFromCtx): the "token" (or "authorization") metadata when present, else
/// with --client-cert-auth the verified client certificate's CommonName, else nobody. Tokens are ignored while auth is
/// disabled, as etcd does; an unknown or expired token is refused with "invalid auth token" (clients re-authenticate).
/// </summary>
public sealed class RequestAuthenticator
{
    private readonly AuthStore _store;
    private readonly ITokenProvider _tokens;
    private readonly bool _clientCertAuth;

    public RequestAuthenticator(AuthStore store, ITokenProvider tokens, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _store = store;
        _tokens = tokens;
        _clientCertAuth = options.ClientTls.ClientCertAuth;
    }

    /// <summary>The caller, or null while auth is disabled (nothing to check).</summary>
    public AuthInfo? Resolve(ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!_store.IsEnabled)
        {
            return null;
        }

        var token = context.RequestHeaders.GetValue("token") ?? context.RequestHeaders.GetValue("authorization");
        if (!string.IsNullOrEmpty(token))
        {
            return _tokens.Info(token, _store.Revision) ?? throw EtcdErrors.InvalidAuthToken.Exception();
        }

        if (_clientCertAuth && context.GetHttpContext().Connection.ClientCertificate is { } certificate)
        {
            var commonName = certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
            if (!string.IsNullOrEmpty(commonName))
            {
                return new AuthInfo(commonName, _store.Revision);
            }
        }

        return AuthInfo.Anonymous;
    }

    /// <summary>
    /// The auth context a proposed client request carries, for the checks made when it is applied: the caller and the
    /// auth revision its credentials hold (never 0, which marks the member's own requests).
    /// </summary>
    public InternalRequestHeader Header(ServerCallContext context)
    {
        var info = Resolve(context);
        return new InternalRequestHeader
        {
            Username = info?.Username ?? string.Empty,
            AuthRevision = info is null || info.Revision == 0 ? Math.Max(1, _store.Revision) : info.Revision,
        };
    }

    /// <summary>Throws etcd's error unless the caller may read [key, rangeEnd).</summary>
    public void RequireRange(ServerCallContext context, ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd) =>
        Throw(_store.CheckRange(Resolve(context), key, rangeEnd));

    /// <summary>Throws etcd's error unless the caller holds root rights (maintenance, membership, auth management).</summary>
    public void RequireAdmin(ServerCallContext context) => Throw(_store.CheckAdmin(Resolve(context)));

    private static void Throw(EtcdError? error)
    {
        if (error is not null)
        {
            throw error.Exception();
        }
    }
}
