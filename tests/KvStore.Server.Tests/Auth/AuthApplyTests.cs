using Authpb;
using Etcdserverpb;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Server.Auth;
using KvStore.Server.Tests.Apply;
using static KvStore.Server.Tests.Apply.ApplierFixture;

namespace KvStore.Server.Tests.Auth;

/// <summary>
/// The replicated auth store through the applier: etcd's root rules, the permission checks of writes at apply time
/// (from the auth context in the entry header), persistence in the store, and simple tokens.
/// </summary>
public sealed class AuthApplyTests : IDisposable
{
    private readonly ApplierFixture _f = new();

    public void Dispose() => _f.Dispose();

    [Fact]
    public void Enable_needs_root_user_with_root_role()
    {
        Admin(new InternalRequest { AuthEnable = new() }).Error.Should().Be(EtcdErrors.RootUserNotExist);
        AddUser("root", "rootpw");
        Admin(new InternalRequest { AuthEnable = new() }).Error.Should().Be(EtcdErrors.RootRoleNotExist);
        Admin(new InternalRequest { AuthUserGrantRole = new() { User = "root", Role = "root" } }).Error.Should().BeNull("root can be granted without a root role record");
        Admin(new InternalRequest { AuthEnable = new() }).Error.Should().BeNull();
        _f.Auth.IsEnabled.Should().BeTrue();
    }

    [Fact]
    public void Root_cannot_be_deleted_nor_lose_root_while_enabled_and_others_cannot_manage()
    {
        EnableWithRoot();
        AddUser("u", "pw");
        As("root", new InternalRequest { AuthUserRevokeRole = new() { Name = "root", Role = "root" } }).Error.Should().Be(EtcdErrors.InvalidAuthMgmt);
        As("root", new InternalRequest { AuthUserDelete = new() { Name = "root" } }).Error.Should().Be(EtcdErrors.InvalidAuthMgmt);
        As("root", new InternalRequest { AuthRoleDelete = new() { Role = "root" } }).Error.Should().Be(EtcdErrors.InvalidAuthMgmt);
        As("u", new InternalRequest { AuthUserAdd = new() { Name = "x" } }).Error.Should().Be(EtcdErrors.PermissionDenied);
        As("u", new InternalRequest { AuthDisable = new() }).Error.Should().Be(EtcdErrors.PermissionDenied);
        As(string.Empty, new InternalRequest { AuthEnable = new() }).Error.Should().Be(EtcdErrors.UserEmpty, "etcd checks root rights before the already-enabled no-op");
        As("ghost", new InternalRequest { AuthRoleAdd = new() { Name = "r" } }).Error.Should().Be(EtcdErrors.UserNotFound);
        _f.Auth.State.Users.Keys.Should().Equal("root", "u");
    }

    [Fact]
    public void Management_errors_and_every_change_bumps_the_revision()
    {
        var start = _f.Auth.Revision;
        start.Should().Be(1, "etcd starts the auth revision at 1");
        AddUser("alice", "pw");
        AddUserOutcome("alice").Error.Should().Be(EtcdErrors.UserAlreadyExist);
        AddUserOutcome(string.Empty).Error.Should().Be(EtcdErrors.UserEmpty);
        Admin(new InternalRequest { AuthRoleAdd = new() { Name = "r" } }).Error.Should().BeNull();
        Admin(new InternalRequest { AuthRoleAdd = new() { Name = "r" } }).Error.Should().Be(EtcdErrors.RoleAlreadyExist);
        Admin(new InternalRequest { AuthUserGrantRole = new() { User = "alice", Role = "nope" } }).Error.Should().Be(EtcdErrors.RoleNotFound);
        Admin(new InternalRequest { AuthUserGrantRole = new() { User = "bob", Role = "r" } }).Error.Should().Be(EtcdErrors.UserNotFound);
        Admin(new InternalRequest { AuthUserRevokeRole = new() { Name = "alice", Role = "r" } }).Error.Should().Be(EtcdErrors.RoleNotGranted);
        Admin(new InternalRequest { AuthRoleRevokePermission = new() { Role = "r", Key = Bytes("k") } }).Error.Should().Be(EtcdErrors.PermissionNotGranted);
        _f.Auth.Revision.Should().Be(start + 2, "only the two successful changes count");
    }

    [Fact]
    public void Permissions_are_kept_sorted_by_key_and_regranting_replaces_the_type()
    {
        Admin(new InternalRequest { AuthRoleAdd = new() { Name = "r" } });
        Grant("r", Permission.Types.Type.Read, "/z", "\0");
        Grant("r", Permission.Types.Type.Read, "/single", "");
        Grant("r", Permission.Types.Type.Write, "/pfx/", "/pfx0");
        Grant("r", Permission.Types.Type.Readwrite, "/pfx/", "/pfx0");
        var perms = _f.Auth.State.Roles["r"].KeyPermission;
        perms.Select(p => p.Key.ToStringUtf8()).Should().Equal("/pfx/", "/single", "/z");
        perms[0].PermType.Should().Be(Permission.Types.Type.Readwrite);
    }

    [Fact]
    public void Writes_are_checked_at_apply_against_the_user_roles()
    {
        SetUpApp();
        AsWrite("app", Put("/app/w")).Error.Should().BeNull();
        AsWrite("app", Put("/app/r")).Error.Should().Be(EtcdErrors.PermissionDenied);
        AsWrite("app", new InternalRequest { DeleteRange = new() { Key = Bytes("/app/"), RangeEnd = Bytes("/app0") } }).Error.Should().Be(EtcdErrors.PermissionDenied, "write is granted on the single key /app/w only");
        AsWrite("root", Put("/other")).Error.Should().BeNull("root may write anything");
        AsWrite(string.Empty, Put("/app/w")).Error.Should().Be(EtcdErrors.UserEmpty);
        AsWrite("root", Put("/other")).Error.Should().BeNull();
        _f.Store.CurrentRevision.Should().Be(4, "three writes were permitted; denied ones leave no trace");
    }

    [Fact]
    public void With_auth_on_an_entry_without_a_user_is_refused_whatever_its_origin()
    {
        SetUpApp();
        var before = _f.Store.CurrentRevision;
        _f.Apply(Put("/app/w")).Error.Should().Be(EtcdErrors.UserEmpty, "no header at all: nobody sent credentials");
        As(string.Empty, Put("/app/w"), revision: 0).Error.Should().Be(EtcdErrors.UserEmpty, "auth revision 0 does not mean the member itself");
        As(string.Empty, Put("/app/w"), revision: 1).Error.Should().Be(EtcdErrors.UserEmpty, "proposed while auth was off, applied after it was enabled");
        _f.Leases.Granted.Add(9);
        _f.Leases.Attached[9] = [Bytes("/app/w").ToByteArray()];
        As(string.Empty, new InternalRequest { LeaseRevoke = new() { ID = 9 } }).Error.Should().Be(EtcdErrors.UserEmpty);
        _f.Leases.Granted.Should().Contain(9);
        As(string.Empty, new InternalRequest { AuthRoleAdd = new() { Name = "x" } }).Error.Should().Be(EtcdErrors.UserEmpty);
        _f.Store.CurrentRevision.Should().Be(before, "refused entries write nothing");
        _f.Auth.State.Roles.Keys.Should().NotContain("x");

        var member = _f.Auth.MemberHeader();
        member.Username.Should().Be("root");
        _f.Apply(new InternalRequest { Put = Put("/other").Put, Header = member }).Error.Should().BeNull("the member's own requests carry root's name and the current revision");
        As("root", new InternalRequest { AuthRoleAdd = new() { Name = "y" } }).Error.Should().BeNull();
        _f.Apply(new InternalRequest { Put = Put("/other").Put, Header = member }).Error.Should().Be(EtcdErrors.AuthOldRevision, "an auth change between propose and apply refuses it, on every member alike");
    }

    [Fact]
    public void Txn_checks_every_compare_and_every_op_of_both_branches_recursively()
    {
        SetUpApp();
        var allowed = new TxnRequest();
        allowed.Compare.Add(new Compare { Key = Bytes("/app/r"), Target = Compare.Types.CompareTarget.Version });
        allowed.Success.Add(new RequestOp { RequestPut = new() { Key = Bytes("/app/w") } });
        allowed.Failure.Add(new RequestOp { RequestRange = new() { Key = Bytes("/app/"), RangeEnd = Bytes("/app0") } });
        AsWrite("app", new InternalRequest { Txn = allowed }).Error.Should().BeNull();

        var badCompare = allowed.Clone();
        badCompare.Compare.Add(new Compare { Key = Bytes("/other"), Target = Compare.Types.CompareTarget.Version });
        AsWrite("app", new InternalRequest { Txn = badCompare }).Error.Should().Be(EtcdErrors.PermissionDenied);

        var badUntakenBranch = allowed.Clone();
        badUntakenBranch.Failure.Add(new RequestOp { RequestPut = new() { Key = Bytes("/app/r") } });
        AsWrite("app", new InternalRequest { Txn = badUntakenBranch }).Error.Should().Be(EtcdErrors.PermissionDenied);

        var nested = allowed.Clone();
        var inner = new TxnRequest();
        inner.Success.Add(new RequestOp { RequestDeleteRange = new() { Key = Bytes("/app/w"), PrevKv = true } });
        inner.Failure.Add(new RequestOp { RequestRange = new() { Key = Bytes("/other") } });
        nested.Success.Add(new RequestOp { RequestTxn = inner });
        AsWrite("app", new InternalRequest { Txn = nested }).Error.Should().Be(EtcdErrors.PermissionDenied);

        _f.Auth.CheckTxn(new AuthInfo("app", _f.Auth.Revision), allowed).Should().BeNull("the read-only path checks the same way");
        _f.Auth.CheckTxn(new AuthInfo("app", _f.Auth.Revision), badCompare).Should().Be(EtcdErrors.PermissionDenied);
    }

    [Fact]
    public void Lease_revoke_and_lease_attach_need_write_on_every_key_of_the_lease()
    {
        SetUpApp();
        _f.Leases.Granted.Add(5);
        _f.Leases.Attached[5] = [Bytes("/app/w").ToByteArray(), Bytes("/other").ToByteArray()];
        AsWrite("app", new InternalRequest { LeaseRevoke = new() { ID = 5 } }).Error.Should().Be(EtcdErrors.PermissionDenied);
        var attach = Put("/app/w");
        attach.Put.Lease = 5;
        AsWrite("app", attach).Error.Should().Be(EtcdErrors.PermissionDenied);
        _f.Leases.Attached[5] = [Bytes("/app/w").ToByteArray()];
        AsWrite("app", attach).Error.Should().BeNull();
    }

    [Fact]
    public void Permission_changes_apply_to_existing_credentials_at_once()
    {
        SetUpApp();
        var revisionBefore = _f.Auth.Revision;
        AsWrite("app", Put("/app/w")).Error.Should().BeNull();
        Grant("app-role", Permission.Types.Type.Write, "/other", string.Empty);
        AsWrite("app", Put("/other")).Error.Should().BeNull("a simple token carries the member's current revision");
        As("app", Put("/other"), revisionBefore).Error.Should().Be(EtcdErrors.AuthOldRevision, "a JWT issued before the change is too old");
        As("root", new InternalRequest { AuthUserRevokeRole = new() { Name = "app", Role = "app-role" } }).Error.Should().BeNull();
        AsWrite("app", Put("/app/w")).Error.Should().Be(EtcdErrors.PermissionDenied);
    }

    [Fact]
    public void Authenticate_registers_a_simple_token_that_expires_after_the_ttl_since_last_use()
    {
        EnableWithRoot();
        var outcome = _f.Apply(new InternalRequest
        {
            Authenticate = new InternalAuthenticateRequest { Name = "root", SimpleTokenPrefix = "abcdefghijklmnop", CheckedRevision = _f.Auth.Revision },
        });
        var token = ((AuthenticateResponse)outcome.Response!).Token;
        token.Should().StartWith("abcdefghijklmnop.");
        _f.Tokens.Info(token, _f.Auth.Revision).Should().Be(new AuthInfo("root", _f.Auth.Revision));
        _f.Time.Advance(TimeSpan.FromMinutes(4));
        _f.Tokens.Info(token, _f.Auth.Revision).Should().NotBeNull("use extends the token");
        _f.Time.Advance(TimeSpan.FromMinutes(4));
        _f.Tokens.Info(token, _f.Auth.Revision).Should().NotBeNull();
        _f.Time.Advance(TimeSpan.FromMinutes(6));
        _f.Tokens.Info(token, _f.Auth.Revision).Should().BeNull("unused for longer than the TTL");

        _f.Apply(new InternalRequest { Authenticate = new() { Name = "root", SimpleTokenPrefix = "p", CheckedRevision = _f.Auth.Revision - 1 } })
            .Error.Should().Be(EtcdErrors.AuthOldRevision, "the user may have changed since the password was checked");
    }

    [Fact]
    public void Changing_a_password_or_deleting_a_user_drops_their_tokens()
    {
        EnableWithRoot();
        AddUser("u", "pw");
        var token = _f.Tokens.Assign("u", _f.Auth.Revision, "prefix", 99);
        As("root", new InternalRequest { AuthUserChangePassword = new() { Name = "u", HashedPassword = PasswordHasher.Hash("new", 4) } }).Error.Should().BeNull();
        _f.Tokens.Info(token, _f.Auth.Revision).Should().BeNull();
        _f.Auth.CheckPassword("u", "pw").Error.Should().Be(EtcdErrors.AuthFailed);
        _f.Auth.CheckPassword("u", "new").Error.Should().BeNull();
        _f.Auth.CheckPassword("nobody", "new").Error.Should().Be(EtcdErrors.AuthFailed);
    }

    [Fact]
    public void Auth_state_survives_a_checkpoint_and_reopen_and_holds_no_clear_password()
    {
        var directory = Path.Combine(Path.GetTempPath(), "kvstore-auth-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var store = Storage.Mvcc.MvccStore.Open(new() { DataDirectory = directory }, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance))
            {
                var auth = new AuthStore(store);
                var tokens = new SimpleTokenProvider(TimeSpan.FromMinutes(1), TimeProvider.System);
                ulong index = 0;
                void Apply(InternalRequest r)
                {
                    r.Header = new InternalRequestHeader { Username = "root", AuthRevision = auth.Revision };
                    using var txn = store.BeginWrite(++index);
                    auth.Apply(txn, r, tokens).Error.Should().BeNull();
                    txn.Commit();
                }

                Apply(new InternalRequest { AuthUserAdd = new() { Name = "root", HashedPassword = PasswordHasher.Hash("secret-pw", 4) } });
                Apply(new InternalRequest { AuthUserGrantRole = new() { User = "root", Role = "root" } });
                Apply(new InternalRequest { AuthRoleAdd = new() { Name = "r" } });
                Apply(new InternalRequest { AuthRoleGrantPermission = new() { Name = "r", Perm = new() { Key = Bytes("k"), PermType = Permission.Types.Type.Write } } });
                Apply(new InternalRequest { AuthEnable = new() });
                store.Checkpoint();
            }

            using var reopened = Storage.Mvcc.MvccStore.Open(new() { DataDirectory = directory }, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            var loaded = new AuthStore(reopened);
            loaded.IsEnabled.Should().BeTrue();
            loaded.Revision.Should().Be(6);
            loaded.State.Roles["r"].KeyPermission.Should().ContainSingle().Which.Key.ToStringUtf8().Should().Be("k");
            var stored = loaded.State.Users["root"];
            stored.Password.ToStringUtf8().Should().StartWith("$2").And.NotContain("secret-pw");
            loaded.CheckPassword("root", "secret-pw").Error.Should().BeNull();
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private void SetUpApp()
    {
        EnableWithRoot();
        AddUser("app", "apppw");
        As("root", new InternalRequest { AuthRoleAdd = new() { Name = "app-role" } }).Error.Should().BeNull();
        Grant("app-role", Permission.Types.Type.Read, "/app/", "/app0");
        Grant("app-role", Permission.Types.Type.Write, "/app/w", string.Empty);
        As("root", new InternalRequest { AuthUserGrantRole = new() { User = "app", Role = "app-role" } }).Error.Should().BeNull();
    }

    private void EnableWithRoot()
    {
        AddUser("root", "rootpw");
        Admin(new InternalRequest { AuthUserGrantRole = new() { User = "root", Role = "root" } }).Error.Should().BeNull();
        Admin(new InternalRequest { AuthEnable = new() }).Error.Should().BeNull();
    }

    private void AddUser(string name, string password) => AddUserOutcome(name, password).Error.Should().BeNull();

    private ApplyOutcome AddUserOutcome(string name, string password = "pw") =>
        As("root", new InternalRequest { AuthUserAdd = new() { Name = name, HashedPassword = PasswordHasher.Hash(password, 4) } });

    private void Grant(string role, Permission.Types.Type type, string key, string rangeEnd) =>
        As("root", new InternalRequest
        {
            AuthRoleGrantPermission = new() { Name = role, Perm = new() { PermType = type, Key = Bytes(key), RangeEnd = Bytes(rangeEnd) } },
        }).Error.Should().BeNull();

    /// <summary>Before auth is enabled anyone manages auth; afterwards as root.</summary>
    private ApplyOutcome Admin(InternalRequest request) => As(_f.Auth.IsEnabled ? "root" : string.Empty, request);

    private ApplyOutcome AsWrite(string user, InternalRequest request) => As(user, request);

    private ApplyOutcome As(string user, InternalRequest request, ulong? revision = null)
    {
        request.Header = new InternalRequestHeader { Username = user, AuthRevision = revision ?? _f.Auth.Revision };
        return _f.Apply(request);
    }

    private static InternalRequest Put(string key) => new() { Put = new PutRequest { Key = Bytes(key), Value = Bytes("v") } };
}
