using System.Collections.Concurrent;
using System.Collections.Immutable;
using Authpb;

namespace KvStore.Server.Auth;

/// <summary>
/// One immutable version of the replicated auth store: enabled flag, revision, users and roles. The applier builds a
/// new version per change and publishes it after the store transaction committed, so readers never lock and never see
/// half a change. Merged key permissions are computed per user on first use and belong to this version only, so a
/// change of roles or permissions takes effect for every existing token at once.
/// </summary>
internal sealed class AuthState
{
    /// <summary>The role that may do everything, including auth management and maintenance.</summary>
    public const string RootRole = "root";

    /// <summary>The user that must exist (with <see cref="RootRole"/>) before auth can be enabled.</summary>
    public const string RootUser = "root";

    private readonly ConcurrentDictionary<string, UserPermissions> _permissions = new(StringComparer.Ordinal);

    public AuthState(bool enabled, ulong revision, ImmutableSortedDictionary<string, User> users, ImmutableSortedDictionary<string, Role> roles)
    {
        Enabled = enabled;
        Revision = revision;
        Users = users;
        Roles = roles;
    }

    /// <summary>A store that never saw an auth change: disabled, revision 1 (etcd starts its auth revision at 1).</summary>
    public static AuthState Initial { get; } = new(
        false, 1, ImmutableSortedDictionary.Create<string, User>(StringComparer.Ordinal), ImmutableSortedDictionary.Create<string, Role>(StringComparer.Ordinal));

    public bool Enabled { get; }

    public ulong Revision { get; }

    public ImmutableSortedDictionary<string, User> Users { get; }

    public ImmutableSortedDictionary<string, Role> Roles { get; }

    public static bool HasRootRole(User user) => user.Roles.Contains(RootRole);

    /// <summary>The read and write key sets of <paramref name="user"/> (named <paramref name="name"/>), from the roles it holds in this version.</summary>
    public UserPermissions PermissionsOf(string name, User user) => _permissions.GetOrAdd(name, _ =>
    {
        var read = new List<(byte[], byte[])>();
        var write = new List<(byte[], byte[])>();
        foreach (var roleName in user.Roles)
        {
            if (!Roles.TryGetValue(roleName, out var role))
            {
                continue;
            }

            foreach (var perm in role.KeyPermission)
            {
                var interval = (perm.Key.ToByteArray(), perm.RangeEnd.ToByteArray());
                if (perm.PermType is Permission.Types.Type.Read or Permission.Types.Type.Readwrite)
                {
                    read.Add(interval);
                }

                if (perm.PermType is Permission.Types.Type.Write or Permission.Types.Type.Readwrite)
                {
                    write.Add(interval);
                }
            }
        }

        return new UserPermissions(KeyRangeSet.From(read), KeyRangeSet.From(write));
    });

    public AuthState With(bool? enabled = null, ImmutableSortedDictionary<string, User>? users = null, ImmutableSortedDictionary<string, Role>? roles = null) =>
        new(enabled ?? Enabled, Revision + 1, users ?? Users, roles ?? Roles);
}

/// <summary>The keys one user may read and write.</summary>
internal sealed record UserPermissions(KeyRangeSet Read, KeyRangeSet Write);
