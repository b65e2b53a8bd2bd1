using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Text;
using Authpb;
using Etcdserverpb;
using Google.Protobuf;
using KvStore.Internal;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Auth;

/// <summary>
/// Auth changes applied from the log (apply thread only), with etcd's rules: root rights for management when auth is
/// on, root user + root role before enabling, root may not be deleted nor lose the root role while enabled. Every
/// change bumps the auth revision and is written to the meta buckets in the entry's transaction (with the consistent
/// index); the new state is published only after the commit.
/// </summary>
public sealed partial class AuthStore
{
    /// <summary>
    /// Applies an auth entry at <paramref name="index"/>. Returns the response (header without cluster fields) or
    /// etcd's error; either way the index is recorded.
    /// </summary>
    public (IMessage? Response, EtcdError? Error) Apply(MvccWriteTxn txn, InternalRequest request, ITokenProvider tokens)
    {
        ArgumentNullException.ThrowIfNull(txn);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(tokens);
        var state = _state;
        var info = FromHeader(request.Header);
        if (request.RequestCase != InternalRequest.RequestOneofCase.Authenticate && CheckAdmin(state, info) is { } denied)
        {
            return (null, denied);
        }

        var (next, response, error) = request.RequestCase switch
        {
            InternalRequest.RequestOneofCase.AuthEnable => Enable(state),
            InternalRequest.RequestOneofCase.AuthDisable => Disable(state, tokens),
            InternalRequest.RequestOneofCase.Authenticate => Authenticate(state, request.Authenticate, txn.Index, tokens),
            InternalRequest.RequestOneofCase.AuthUserAdd => UserAdd(state, request.AuthUserAdd),
            InternalRequest.RequestOneofCase.AuthUserDelete => UserDelete(state, request.AuthUserDelete, tokens),
            InternalRequest.RequestOneofCase.AuthUserChangePassword => ChangePassword(state, request.AuthUserChangePassword, tokens),
            InternalRequest.RequestOneofCase.AuthUserGrantRole => GrantRole(state, request.AuthUserGrantRole),
            InternalRequest.RequestOneofCase.AuthUserRevokeRole => RevokeRole(state, request.AuthUserRevokeRole),
            InternalRequest.RequestOneofCase.AuthRoleAdd => RoleAdd(state, request.AuthRoleAdd),
            InternalRequest.RequestOneofCase.AuthRoleDelete => RoleDelete(state, request.AuthRoleDelete),
            InternalRequest.RequestOneofCase.AuthRoleGrantPermission => GrantPermission(state, request.AuthRoleGrantPermission),
            InternalRequest.RequestOneofCase.AuthRoleRevokePermission => RevokePermission(state, request.AuthRoleRevokePermission),
            _ => throw new ArgumentException($"{request.RequestCase} is not an auth request", nameof(request)),
        };

        if (next is not null)
        {
            Persist(txn, state, next);
            txn.Commit();
            _state = next;
        }

        return (response, error);
    }

    /// <summary>True for the entries <see cref="Apply"/> handles.</summary>
    public static bool IsAuthRequest(InternalRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return (int)request.RequestCase is >= 20 and <= 39;
    }

    private static Result Enable(AuthState state)
    {
        if (state.Enabled)
        {
            return new(null, new AuthEnableResponse(), null);
        }

        if (!state.Users.TryGetValue(AuthState.RootUser, out var root))
        {
            return Fail(EtcdErrors.RootUserNotExist);
        }

        return AuthState.HasRootRole(root) ? new(state.With(enabled: true), new AuthEnableResponse(), null) : Fail(EtcdErrors.RootRoleNotExist);
    }

    private static Result Disable(AuthState state, ITokenProvider tokens)
    {
        if (!state.Enabled)
        {
            return new(null, new AuthDisableResponse(), null);
        }

        tokens.InvalidateAll();
        return new(state.With(enabled: false), new AuthDisableResponse(), null);
    }

    private static Result Authenticate(AuthState state, InternalAuthenticateRequest request, ulong index, ITokenProvider tokens)
    {
        if (!state.Enabled)
        {
            return Fail(EtcdErrors.AuthNotEnabled);
        }

        if (state.Revision != request.CheckedRevision)
        {
            // The user may have changed since the proposer checked the password: the proposer checks again.
            return Fail(EtcdErrors.AuthOldRevision);
        }

        if (!state.Users.ContainsKey(request.Name))
        {
            return Fail(EtcdErrors.AuthFailed);
        }

        var token = tokens.Assign(request.Name, state.Revision, request.SimpleTokenPrefix, index);
        return new(null, new AuthenticateResponse { Token = token }, null);
    }

    private static Result UserAdd(AuthState state, AuthUserAddRequest request)
    {
        if (request.Name.Length == 0)
        {
            return Fail(EtcdErrors.UserEmpty);
        }

        if (state.Users.ContainsKey(request.Name))
        {
            return Fail(EtcdErrors.UserAlreadyExist);
        }

        var noPassword = request.Options?.NoPassword ?? false;
        var user = new User
        {
            Name = ByteString.CopyFromUtf8(request.Name),
            Password = noPassword ? ByteString.Empty : ByteString.CopyFromUtf8(request.HashedPassword),
            Options = request.Options ?? new UserAddOptions(),
        };
        return new(state.With(users: state.Users.SetItem(request.Name, user)), new AuthUserAddResponse(), null);
    }

    private static Result UserDelete(AuthState state, AuthUserDeleteRequest request, ITokenProvider tokens)
    {
        if (state.Enabled && request.Name == AuthState.RootUser)
        {
            return Fail(EtcdErrors.InvalidAuthMgmt);
        }

        if (!state.Users.ContainsKey(request.Name))
        {
            return Fail(EtcdErrors.UserNotFound);
        }

        tokens.InvalidateUser(request.Name);
        return new(state.With(users: state.Users.Remove(request.Name)), new AuthUserDeleteResponse(), null);
    }

    private static Result ChangePassword(AuthState state, AuthUserChangePasswordRequest request, ITokenProvider tokens)
    {
        if (!state.Users.TryGetValue(request.Name, out var user))
        {
            return Fail(EtcdErrors.UserNotFound);
        }

        var updated = user.Clone();
        updated.Password = ByteString.CopyFromUtf8(request.HashedPassword);
        tokens.InvalidateUser(request.Name);
        return new(state.With(users: state.Users.SetItem(request.Name, updated)), new AuthUserChangePasswordResponse(), null);
    }

    private static Result GrantRole(AuthState state, AuthUserGrantRoleRequest request)
    {
        if (!state.Users.TryGetValue(request.User, out var user))
        {
            return Fail(EtcdErrors.UserNotFound);
        }

        if (request.Role != AuthState.RootRole && !state.Roles.ContainsKey(request.Role))
        {
            return Fail(EtcdErrors.RoleNotFound);
        }

        if (user.Roles.Contains(request.Role))
        {
            // etcd: granting a role the user already holds succeeds and changes nothing.
            return new(null, new AuthUserGrantRoleResponse(), null);
        }

        var updated = user.Clone();
        updated.Roles.Clear();
        updated.Roles.Add(user.Roles.Append(request.Role).Order(StringComparer.Ordinal));
        return new(state.With(users: state.Users.SetItem(request.User, updated)), new AuthUserGrantRoleResponse(), null);
    }

    private static Result RevokeRole(AuthState state, AuthUserRevokeRoleRequest request)
    {
        if (state.Enabled && request.Name == AuthState.RootUser && request.Role == AuthState.RootRole)
        {
            return Fail(EtcdErrors.InvalidAuthMgmt);
        }

        if (!state.Users.TryGetValue(request.Name, out var user))
        {
            return Fail(EtcdErrors.UserNotFound);
        }

        if (!user.Roles.Contains(request.Role))
        {
            return Fail(EtcdErrors.RoleNotGranted);
        }

        var updated = user.Clone();
        updated.Roles.Remove(request.Role);
        return new(state.With(users: state.Users.SetItem(request.Name, updated)), new AuthUserRevokeRoleResponse(), null);
    }

    private static Result RoleAdd(AuthState state, AuthRoleAddRequest request)
    {
        if (request.Name.Length == 0)
        {
            return Fail(EtcdErrors.RoleEmpty);
        }

        if (state.Roles.ContainsKey(request.Name))
        {
            return Fail(EtcdErrors.RoleAlreadyExist);
        }

        var role = new Role { Name = ByteString.CopyFromUtf8(request.Name) };
        return new(state.With(roles: state.Roles.SetItem(request.Name, role)), new AuthRoleAddResponse(), null);
    }

    private static Result RoleDelete(AuthState state, AuthRoleDeleteRequest request)
    {
        if (state.Enabled && request.Role == AuthState.RootRole)
        {
            return Fail(EtcdErrors.InvalidAuthMgmt);
        }

        if (!state.Roles.ContainsKey(request.Role))
        {
            return Fail(EtcdErrors.RoleNotFound);
        }

        // The role leaves every user that held it, in the same change.
        var users = state.Users;
        foreach (var (name, user) in state.Users)
        {
            if (user.Roles.Contains(request.Role))
            {
                var updated = user.Clone();
                updated.Roles.Remove(request.Role);
                users = users.SetItem(name, updated);
            }
        }

        return new(state.With(users: users, roles: state.Roles.Remove(request.Role)), new AuthRoleDeleteResponse(), null);
    }

    private static Result GrantPermission(AuthState state, AuthRoleGrantPermissionRequest request)
    {
        if (!state.Roles.TryGetValue(request.Name, out var role))
        {
            return Fail(EtcdErrors.RoleNotFound);
        }

        if (request.Perm is null)
        {
            return Fail(EtcdErrors.PermissionNotGiven);
        }

        // Kept sorted by key; the same key and range end replaces the type (etcd's order and rule).
        var perms = role.KeyPermission.ToList();
        var at = perms.FindIndex(p => p.Key.Span.SequenceCompareTo(request.Perm.Key.Span) >= 0);
        if (at < 0)
        {
            at = perms.Count;
        }

        var perm = new Permission { PermType = request.Perm.PermType, Key = request.Perm.Key, RangeEnd = request.Perm.RangeEnd };
        if (at < perms.Count && perms[at].Key.Equals(perm.Key) && perms[at].RangeEnd.Equals(perm.RangeEnd))
        {
            perms[at] = perm;
        }
        else
        {
            perms.Insert(at, perm);
        }

        var updated = new Role { Name = role.Name };
        updated.KeyPermission.Add(perms);
        return new(state.With(roles: state.Roles.SetItem(request.Name, updated)), new AuthRoleGrantPermissionResponse(), null);
    }

    private static Result RevokePermission(AuthState state, AuthRoleRevokePermissionRequest request)
    {
        if (!state.Roles.TryGetValue(request.Role, out var role))
        {
            return Fail(EtcdErrors.RoleNotFound);
        }

        var perms = role.KeyPermission.ToList();
        var at = perms.FindIndex(p => p.Key.Equals(request.Key) && p.RangeEnd.Equals(request.RangeEnd));
        if (at < 0)
        {
            return Fail(EtcdErrors.PermissionNotGranted);
        }

        perms.RemoveAt(at);
        var updated = new Role { Name = role.Name };
        updated.KeyPermission.Add(perms);
        return new(state.With(roles: state.Roles.SetItem(request.Role, updated)), new AuthRoleRevokePermissionResponse(), null);
    }

    /// <summary>Writes what differs between <paramref name="before"/> and <paramref name="after"/>, and the revision.</summary>
    private static void Persist(MvccWriteTxn txn, AuthState before, AuthState after)
    {
        var revision = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(revision, after.Revision);
        txn.PutMeta(AuthBucket, RevisionKey, revision);
        if (before.Enabled != after.Enabled)
        {
            txn.PutMeta(AuthBucket, EnabledKey, [after.Enabled ? (byte)1 : (byte)0]);
        }

        PersistBucket(txn, UsersBucket, before.Users, after.Users);
        PersistBucket(txn, RolesBucket, before.Roles, after.Roles);
    }

    private static void PersistBucket<T>(MvccWriteTxn txn, string bucket, ImmutableSortedDictionary<string, T> before, ImmutableSortedDictionary<string, T> after)
        where T : class, IMessage
    {
        if (ReferenceEquals(before, after))
        {
            return;
        }

        foreach (var (name, value) in after)
        {
            if (!before.TryGetValue(name, out var old) || !ReferenceEquals(old, value))
            {
                txn.PutMeta(bucket, Encoding.UTF8.GetBytes(name), value.ToByteArray());
            }
        }

        foreach (var name in before.Keys)
        {
            if (!after.ContainsKey(name))
            {
                txn.DeleteMeta(bucket, Encoding.UTF8.GetBytes(name));
            }
        }
    }

    private static Result Fail(EtcdError error) => new(null, null, error);

    private readonly record struct Result(AuthState? Next, IMessage? Response, EtcdError? Error);
}
