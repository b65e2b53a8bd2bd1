using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Text;
using Authpb;
using Etcdserverpb;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Auth;

/// <summary>
/// The replicated auth store (etcd's authStore): users, roles, the enabled flag and the auth revision, persisted in
/// the store's meta buckets by the applier in the same transaction as the consistent index, and the permission checks
/// made against it. Checks at apply time (writes, auth management) read only this replicated state and the auth
/// context carried in the entry, so every member decides alike; reads are checked by the serving member against the
/// same state before it answers.
/// </summary>
public sealed partial class AuthStore : IMemberCredentials
{
    /// <summary>Meta bucket of the enabled flag and the revision (etcd's "auth" bucket and keys).</summary>
    public const string AuthBucket = "auth";

    /// <summary>Meta bucket of users: name → authpb.User (password as a bcrypt hash).</summary>
    public const string UsersBucket = "authUsers";

    /// <summary>Meta bucket of roles: name → authpb.Role.</summary>
    public const string RolesBucket = "authRoles";

    private static readonly byte[] EnabledKey = Encoding.UTF8.GetBytes("authEnabled");
    private static readonly byte[] RevisionKey = Encoding.UTF8.GetBytes("authRevision");

    private volatile AuthState _state = AuthState.Initial;

    /// <summary>Builds the auth store from the store's meta buckets.</summary>
    public AuthStore(MvccStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        Load(store);
    }

    /// <summary>True when requests need credentials.</summary>
    public bool IsEnabled => _state.Enabled;

    /// <summary>The auth revision: bumped by every change of users, roles, permissions or the enabled flag.</summary>
    public ulong Revision => _state.Revision;

    internal AuthState State => _state;

    /// <summary>(Re)reads the auth state from the store: at start and after a snapshot replaced the store's content.</summary>
    public void Load(MvccStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        var enabled = false;
        ulong revision = AuthState.Initial.Revision;
        foreach (var (key, value) in store.ReadMeta(AuthBucket))
        {
            if (key.AsSpan().SequenceEqual(EnabledKey))
            {
                enabled = value.Length == 1 && value[0] == 1;
            }
            else if (key.AsSpan().SequenceEqual(RevisionKey) && value.Length == 8)
            {
                revision = BinaryPrimitives.ReadUInt64BigEndian(value);
            }
        }

        var users = ImmutableSortedDictionary.CreateBuilder<string, User>(StringComparer.Ordinal);
        foreach (var (key, value) in store.ReadMeta(UsersBucket))
        {
            users[Encoding.UTF8.GetString(key)] = User.Parser.ParseFrom(value);
        }

        var roles = ImmutableSortedDictionary.CreateBuilder<string, Role>(StringComparer.Ordinal);
        foreach (var (key, value) in store.ReadMeta(RolesBucket))
        {
            roles[Encoding.UTF8.GetString(key)] = Role.Parser.ParseFrom(value);
        }

        _state = new AuthState(enabled, revision, users.ToImmutable(), roles.ToImmutable());
    }

    /// <summary>
    /// The password check of Authenticate, made before proposing (bcrypt is slow by design, so it never runs on the
    /// apply thread). Returns the revision the check was made at.
    /// </summary>
    public (EtcdError? Error, ulong Revision) CheckPassword(string name, string password)
    {
        var state = _state;
        if (!state.Enabled)
        {
            return (EtcdErrors.AuthNotEnabled, state.Revision);
        }

        if (!state.Users.TryGetValue(name, out var user) || (user.Options?.NoPassword ?? false) || user.Password.IsEmpty)
        {
            return (EtcdErrors.AuthFailed, state.Revision);
        }

        return (PasswordHasher.Verify(password, user.Password.ToStringUtf8()) ? null : EtcdErrors.AuthFailed, state.Revision);
    }

    /// <summary>True if <paramref name="name"/> is a user of the current state.</summary>
    public bool UserExists(string name) => _state.Users.ContainsKey(name);

    /// <summary>Read permission on [key, rangeEnd); null = permitted. <paramref name="info"/> null = auth was off when the caller was resolved.</summary>
    public EtcdError? CheckRange(AuthInfo? info, ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd) =>
        Check(_state, info, key, rangeEnd, write: false);

    /// <summary>
    /// Root rights (auth management, maintenance, membership): always when auth is off (or was, when the caller was
    /// resolved: <paramref name="info"/> null), otherwise the user must hold the root role.
    /// </summary>
    public EtcdError? CheckAdmin(AuthInfo? info) => CheckAdmin(_state, info);

    /// <summary>True if <paramref name="user"/> holds <paramref name="role"/> (RoleGet of one's own role is allowed).</summary>
    public bool HasRole(string user, string role) => _state.Users.TryGetValue(user, out var u) && u.Roles.Contains(role);

    /// <summary>Every compare and every operation of the txn tree, both branches, as etcd checks them.</summary>
    public EtcdError? CheckTxn(AuthInfo? info, TxnRequest request, Func<long, IEnumerable<byte[]>>? leaseKeys = null) =>
        CheckTxn(_state, info, request, leaseKeys);

    /// <summary>
    /// The check of a write entry at apply time, from the auth context the proposer put in its header (see
    /// <see cref="FromHeader"/>); null = permitted. Entries that do not touch keys are not checked here.
    /// </summary>
    public EtcdError? CheckApply(KvStore.Internal.InternalRequest request, Func<long, IEnumerable<byte[]>> leaseKeys)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(leaseKeys);
        var state = _state;
        if (!state.Enabled)
        {
            return null;
        }

        var info = FromHeader(request.Header);
        return request.RequestCase switch
        {
            KvStore.Internal.InternalRequest.RequestOneofCase.Put => CheckPut(state, info, request.Put, leaseKeys),
            KvStore.Internal.InternalRequest.RequestOneofCase.DeleteRange => CheckDelete(state, info, request.DeleteRange),
            KvStore.Internal.InternalRequest.RequestOneofCase.Txn => CheckTxn(state, info, request.Txn, leaseKeys),
            KvStore.Internal.InternalRequest.RequestOneofCase.LeaseRevoke => CheckLeaseKeys(state, info, leaseKeys(request.LeaseRevoke.ID)),
            _ => null,
        };
    }

    /// <summary>
    /// The auth context of an entry, exactly as the proposer wrote it: no header, or one without a user, is a client
    /// that sent no credentials (refused with "user name is empty" while auth is on). Nothing else about the entry
    /// or this member widens what it may do.
    /// </summary>
    public static AuthInfo FromHeader(KvStore.Internal.InternalRequestHeader? header) =>
        header is null ? AuthInfo.Anonymous : new AuthInfo(header.Username, header.AuthRevision);

    /// <inheritdoc/>
    public KvStore.Internal.InternalRequestHeader MemberHeader() =>
        new() { Username = AuthState.RootUser, AuthRevision = _state.Revision };

    private static EtcdError? CheckAdmin(AuthState state, AuthInfo? info)
    {
        if (!state.Enabled || info is null)
        {
            return null;
        }

        if (info.Username.Length == 0)
        {
            return EtcdErrors.UserEmpty;
        }

        if (!state.Users.TryGetValue(info.Username, out var user))
        {
            return EtcdErrors.UserNotFound;
        }

        return AuthState.HasRootRole(user) ? null : EtcdErrors.PermissionDenied;
    }

    private static EtcdError? CheckPut(AuthState state, AuthInfo? info, PutRequest put, Func<long, IEnumerable<byte[]>>? leaseKeys)
    {
        var error = Check(state, info, put.Key.Span, [], write: true);
        if (error is null && put.Lease != 0 && leaseKeys is not null)
        {
            // Attaching a lease whose keys the user cannot write would let the user revoke (delete) them later.
            error = CheckLeaseKeys(state, info, leaseKeys(put.Lease));
        }

        if (error is null && put.PrevKv)
        {
            error = Check(state, info, put.Key.Span, [], write: false);
        }

        return error;
    }

    private static EtcdError? CheckDelete(AuthState state, AuthInfo? info, DeleteRangeRequest delete)
    {
        var error = Check(state, info, delete.Key.Span, delete.RangeEnd.Span, write: true);
        if (error is null && delete.PrevKv)
        {
            error = Check(state, info, delete.Key.Span, delete.RangeEnd.Span, write: false);
        }

        return error;
    }

    private static EtcdError? CheckTxn(AuthState state, AuthInfo? info, TxnRequest request, Func<long, IEnumerable<byte[]>>? leaseKeys)
    {
        foreach (var compare in request.Compare)
        {
            var error = Check(state, info, compare.Key.Span, compare.RangeEnd.Span, write: false);
            if (error is not null)
            {
                return error;
            }
        }

        foreach (var op in request.Success.Concat(request.Failure))
        {
            var error = op.RequestCase switch
            {
                RequestOp.RequestOneofCase.RequestRange => Check(state, info, op.RequestRange.Key.Span, op.RequestRange.RangeEnd.Span, write: false),
                RequestOp.RequestOneofCase.RequestPut => CheckPut(state, info, op.RequestPut, leaseKeys),
                RequestOp.RequestOneofCase.RequestDeleteRange => CheckDelete(state, info, op.RequestDeleteRange),
                RequestOp.RequestOneofCase.RequestTxn => CheckTxn(state, info, op.RequestTxn, leaseKeys),
                _ => null,
            };
            if (error is not null)
            {
                return error;
            }
        }

        return null;
    }

    private static EtcdError? CheckLeaseKeys(AuthState state, AuthInfo? info, IEnumerable<byte[]> keys)
    {
        foreach (var key in keys)
        {
            var error = Check(state, info, key, [], write: true);
            if (error is not null)
            {
                return error;
            }
        }

        return null;
    }

    /// <summary>etcd's isOpPermitted: no user, an outdated auth revision, an unknown user, or keys outside the user's roles.</summary>
    private static EtcdError? Check(AuthState state, AuthInfo? info, ReadOnlySpan<byte> key, ReadOnlySpan<byte> rangeEnd, bool write)
    {
        if (!state.Enabled || info is null)
        {
            return null;
        }

        if (info.Revision == 0 || info.Username.Length == 0)
        {
            return EtcdErrors.UserEmpty;
        }

        if (info.Revision < state.Revision)
        {
            return EtcdErrors.AuthOldRevision;
        }

        if (!state.Users.TryGetValue(info.Username, out var user))
        {
            return EtcdErrors.PermissionDenied;
        }

        if (AuthState.HasRootRole(user))
        {
            return null;
        }

        var permissions = state.PermissionsOf(info.Username, user);
        return (write ? permissions.Write : permissions.Read).Covers(key, rangeEnd) ? null : EtcdErrors.PermissionDenied;
    }
}
