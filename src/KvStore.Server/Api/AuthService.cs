using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using KvStore.Internal;
using KvStore.Server.Auth;
using KvStore.Server.Node;
using KvStore.Server.Options;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Api;

/// <summary>
/// etcd's Auth service. Changes are proposed and applied by every member (root rights are checked when applied, from
/// the caller recorded in the entry); passwords are bcrypt-hashed here, before proposing, so no clear password enters
/// the log. Reads (status, get, list) are answered locally after the linearizable read barrier.
/// </summary>
public sealed class AuthService : Etcdserverpb.Auth.AuthBase
{
    /// <summary>How often Authenticate re-checks a password when auth changed between the check and the apply.</summary>
    private const int AuthenticateAttempts = 5;

    private readonly IProposer _proposer;
    private readonly ILinearizableReads _reads;
    private readonly AuthStore _store;
    private readonly RequestAuthenticator _auth;
    private readonly ITokenProvider _tokens;
    private readonly HeaderFactory _headers;
    private readonly MvccStore _kv;
    private readonly int _bcryptCost;

    public AuthService(IProposer proposer, ILinearizableReads reads, AuthStore store, RequestAuthenticator auth, ITokenProvider tokens, HeaderFactory headers, MvccStore kv, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _proposer = proposer;
        _reads = reads;
        _store = store;
        _auth = auth;
        _tokens = tokens;
        _headers = headers;
        _kv = kv;
        _bcryptCost = options.BcryptCost;
    }

    public override Task<AuthEnableResponse> AuthEnable(AuthEnableRequest request, ServerCallContext context) =>
        ProposeAsync<AuthEnableResponse>(new InternalRequest { AuthEnable = request }, context);

    public override Task<AuthDisableResponse> AuthDisable(AuthDisableRequest request, ServerCallContext context) =>
        ProposeAsync<AuthDisableResponse>(new InternalRequest { AuthDisable = request }, context);

    public override async Task<AuthStatusResponse> AuthStatus(AuthStatusRequest request, ServerCallContext context)
    {
        await ReadBarrierAsync(context);
        _auth.RequireAdmin(context);
        return new AuthStatusResponse { Header = Header(), Enabled = _store.IsEnabled, AuthRevision = _store.Revision };
    }

    public override async Task<AuthenticateResponse> Authenticate(AuthenticateRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        await ReadBarrierAsync(context);
        for (var attempt = 1; ; attempt++)
        {
            var (error, revision) = _store.CheckPassword(request.Name, request.Password);
            if (error is not null)
            {
                throw error.Exception();
            }

            var internalRequest = new InternalRequest
            {
                // The caller's token (if any) is not looked at: Authenticate is how a client replaces a stale one.
                Header = new InternalRequestHeader { AuthRevision = Math.Max(1, revision) },
                Authenticate = new InternalAuthenticateRequest
                {
                    Name = request.Name,
                    SimpleTokenPrefix = _tokens.NewTokenPrefix(),
                    CheckedRevision = revision,
                },
            };
            try
            {
                var response = (AuthenticateResponse)await _proposer.ProposeAsync(internalRequest, context.CancellationToken);
                response.Header = Header();
                return response;
            }
            catch (EtcdException e) when (e.Detail == EtcdErrors.AuthOldRevision.Message && attempt < AuthenticateAttempts)
            {
                // Users or roles changed between the password check and the apply: check again at the new revision.
            }
        }
    }

    public override Task<AuthUserAddResponse> UserAdd(AuthUserAddRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        var safe = request.Clone();
        safe.HashedPassword = request.Options is { NoPassword: true } ? string.Empty : PasswordHasher.Hash(request.Password, _bcryptCost);
        safe.Password = string.Empty;
        return ProposeAsync<AuthUserAddResponse>(new InternalRequest { AuthUserAdd = safe }, context);
    }

    public override async Task<AuthUserGetResponse> UserGet(AuthUserGetRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        await ReadBarrierAsync(context);
        var caller = _auth.Resolve(context);
        if (_store.CheckAdmin(caller) is { } denied && caller?.Username != request.Name)
        {
            throw denied.Exception();
        }

        if (!_store.State.Users.TryGetValue(request.Name, out var user))
        {
            throw EtcdErrors.UserNotFound.Exception();
        }

        var response = new AuthUserGetResponse { Header = Header() };
        response.Roles.Add(user.Roles);
        return response;
    }

    public override async Task<AuthUserListResponse> UserList(AuthUserListRequest request, ServerCallContext context)
    {
        await ReadBarrierAsync(context);
        _auth.RequireAdmin(context);
        var response = new AuthUserListResponse { Header = Header() };
        response.Users.Add(_store.State.Users.Keys);
        return response;
    }

    public override Task<AuthUserDeleteResponse> UserDelete(AuthUserDeleteRequest request, ServerCallContext context) =>
        ProposeAsync<AuthUserDeleteResponse>(new InternalRequest { AuthUserDelete = request }, context);

    public override Task<AuthUserChangePasswordResponse> UserChangePassword(AuthUserChangePasswordRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        var safe = new AuthUserChangePasswordRequest { Name = request.Name, HashedPassword = PasswordHasher.Hash(request.Password, _bcryptCost) };
        return ProposeAsync<AuthUserChangePasswordResponse>(new InternalRequest { AuthUserChangePassword = safe }, context);
    }

    public override Task<AuthUserGrantRoleResponse> UserGrantRole(AuthUserGrantRoleRequest request, ServerCallContext context) =>
        ProposeAsync<AuthUserGrantRoleResponse>(new InternalRequest { AuthUserGrantRole = request }, context);

    public override Task<AuthUserRevokeRoleResponse> UserRevokeRole(AuthUserRevokeRoleRequest request, ServerCallContext context) =>
        ProposeAsync<AuthUserRevokeRoleResponse>(new InternalRequest { AuthUserRevokeRole = request }, context);

    public override Task<AuthRoleAddResponse> RoleAdd(AuthRoleAddRequest request, ServerCallContext context) =>
        ProposeAsync<AuthRoleAddResponse>(new InternalRequest { AuthRoleAdd = request }, context);

    public override async Task<AuthRoleGetResponse> RoleGet(AuthRoleGetRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        await ReadBarrierAsync(context);
        var caller = _auth.Resolve(context);
        if (_store.CheckAdmin(caller) is { } denied && !(caller is not null && _store.HasRole(caller.Username, request.Role)))
        {
            throw denied.Exception();
        }

        if (!_store.State.Roles.TryGetValue(request.Role, out var role))
        {
            throw EtcdErrors.RoleNotFound.Exception();
        }

        var response = new AuthRoleGetResponse { Header = Header() };
        response.Perm.Add(role.KeyPermission);
        return response;
    }

    public override async Task<AuthRoleListResponse> RoleList(AuthRoleListRequest request, ServerCallContext context)
    {
        await ReadBarrierAsync(context);
        _auth.RequireAdmin(context);
        var response = new AuthRoleListResponse { Header = Header() };
        response.Roles.Add(_store.State.Roles.Keys);
        return response;
    }

    public override Task<AuthRoleDeleteResponse> RoleDelete(AuthRoleDeleteRequest request, ServerCallContext context) =>
        ProposeAsync<AuthRoleDeleteResponse>(new InternalRequest { AuthRoleDelete = request }, context);

    public override Task<AuthRoleGrantPermissionResponse> RoleGrantPermission(AuthRoleGrantPermissionRequest request, ServerCallContext context) =>
        ProposeAsync<AuthRoleGrantPermissionResponse>(new InternalRequest { AuthRoleGrantPermission = request }, context);

    public override Task<AuthRoleRevokePermissionResponse> RoleRevokePermission(AuthRoleRevokePermissionRequest request, ServerCallContext context) =>
        ProposeAsync<AuthRoleRevokePermissionResponse>(new InternalRequest { AuthRoleRevokePermission = request }, context);

    private async Task<T> ProposeAsync<T>(InternalRequest request, ServerCallContext context)
        where T : IMessage
    {
        ArgumentNullException.ThrowIfNull(context);
        request.Header = _auth.Header(context);
        var response = (T)await _proposer.ProposeAsync(request, context.CancellationToken);
        response.Descriptor.FindFieldByName("header").Accessor.SetValue(response, Header());
        return response;
    }

    private async Task ReadBarrierAsync(ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        await _reads.WaitForReadIndexAsync(context.CancellationToken);
    }

    private ResponseHeader Header() => _headers.Create(_kv.CurrentRevision);
}
