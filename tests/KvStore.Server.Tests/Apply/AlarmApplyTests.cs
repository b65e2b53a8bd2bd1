using Etcdserverpb;
using KvStore.Internal;
using KvStore.Server.Apply;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;
using static KvStore.Server.Tests.Apply.ApplierFixture;
using AlarmAction = Etcdserverpb.AlarmRequest.Types.AlarmAction;

namespace KvStore.Server.Tests.Apply;

/// <summary>
/// Alarms as replicated state: raised, listed and cleared only by applying AlarmRequest entries, enforced by the
/// applier from that index on, persisted in the store (restart, snapshot) and never decided by member-local state.
/// </summary>
public sealed class AlarmApplyTests : IDisposable
{
    private readonly ApplierFixture _f = new();

    public AlarmApplyTests()
    {
        _f.Put("a", "1");
        _f.Leases.Granted.Add(7);
    }

    public static TheoryData<string, InternalRequest> AddingWrites => new()
    {
        { "put", new InternalRequest { Put = new PutRequest { Key = Bytes("x"), Value = Bytes("1") } } },
        { "txn with a put", TxnWith(new RequestOp { RequestPut = new PutRequest { Key = Bytes("x"), Value = Bytes("1") } }) },
        { "txn with a put in a nested txn", TxnWith(new RequestOp { RequestTxn = TxnWith(new RequestOp { RequestPut = new PutRequest { Key = Bytes("x") } }).Txn }) },
        { "lease grant", new InternalRequest { LeaseGrant = new LeaseGrantRequest { ID = 9, TTL = 10 } } },
    };

    public static TheoryData<string, InternalRequest> FreeingWrites => new()
    {
        { "delete", new InternalRequest { DeleteRange = new DeleteRangeRequest { Key = Bytes("a") } } },
        { "txn with a delete", TxnWith(new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = Bytes("a") } }) },
        { "compaction", new InternalRequest { Compaction = new CompactionRequest { Revision = 2 } } },
        { "lease revoke", new InternalRequest { LeaseRevoke = new LeaseRevokeRequest { ID = 7 } } },
    };

    [Fact]
    public void Activate_lists_the_alarm_and_deactivate_clears_it()
    {
        var raised = _f.Alarm(AlarmAction.Activate, 0xabc, AlarmType.Nospace);
        raised.Alarms.Should().ContainSingle().Which.Should().Be(new AlarmMember { MemberID = 0xabc, Alarm = AlarmType.Nospace });
        _f.Alarm(AlarmAction.Activate, 0x1, AlarmType.Corrupt);

        var all = _f.Alarm(AlarmAction.Get, 0, AlarmType.None).Alarms;
        all.Select(a => (a.MemberID, a.Alarm)).Should().Equal((0x1UL, AlarmType.Corrupt), (0xabcUL, AlarmType.Nospace));
        _f.Alarm(AlarmAction.Get, 0, AlarmType.Nospace).Alarms.Should().ContainSingle().Which.MemberID.Should().Be(0xabc);

        _f.Alarm(AlarmAction.Deactivate, 0xabc, AlarmType.Nospace).Alarms.Should().ContainSingle();
        _f.Alarm(AlarmAction.Deactivate, 0xabc, AlarmType.Nospace).Alarms.Should().BeEmpty("it was no longer active");
        _f.Alarms.List(AlarmType.None).Should().ContainSingle().Which.Alarm.Should().Be(AlarmType.Corrupt);
    }

    [Fact]
    public void Activating_none_changes_nothing_and_a_repeated_activation_is_listed_once()
    {
        _f.Alarm(AlarmAction.Activate, 5, AlarmType.None).Alarms.Should().BeEmpty();
        _f.Alarm(AlarmAction.Activate, 5, AlarmType.Nospace);
        _f.Alarm(AlarmAction.Activate, 5, AlarmType.Nospace).Alarms.Should().ContainSingle();
        _f.Alarms.List(AlarmType.None).Should().ContainSingle();
    }

    [Theory]
    [MemberData(nameof(AddingWrites))]
    public void Nospace_refuses_writes_that_add_data_and_still_records_their_index(string name, InternalRequest request)
    {
        _f.Alarm(AlarmAction.Activate, 1, AlarmType.Nospace);
        var revision = _f.Store.CurrentRevision;
        var index = _f.Store.ConsistentIndex;

        _f.Apply(request).Error.Should().Be(EtcdErrors.NoSpace, name);

        _f.Store.CurrentRevision.Should().Be(revision, "a refused write changes nothing");
        _f.Store.ConsistentIndex.Should().Be(index + 1, "the entry is still applied (as a refusal)");
        _f.Leases.Granted.Should().NotContain(9);
    }

    [Theory]
    [MemberData(nameof(FreeingWrites))]
    public void Nospace_lets_deletes_compaction_and_revokes_through(string name, InternalRequest request)
    {
        _f.Put("a", "2");
        _f.Alarm(AlarmAction.Activate, 1, AlarmType.Nospace);
        _f.Apply(request).Error.Should().BeNull(name);
    }

    [Theory]
    [MemberData(nameof(AddingWrites))]
    [MemberData(nameof(FreeingWrites))]
    public void Corrupt_refuses_every_write(string name, InternalRequest request)
    {
        _f.Put("a", "2");
        _f.Alarm(AlarmAction.Activate, 1, AlarmType.Corrupt);
        var revision = _f.Store.CurrentRevision;

        _f.Apply(request).Error.Should().Be(EtcdErrors.Corrupt, name);
        _f.Store.CurrentRevision.Should().Be(revision);
    }

    [Fact]
    public void Writes_are_accepted_again_from_the_entry_after_the_deactivation()
    {
        _f.Alarm(AlarmAction.Activate, 1, AlarmType.Nospace);
        _f.Alarm(AlarmAction.Activate, 2, AlarmType.Nospace);
        var put = new InternalRequest { Put = new PutRequest { Key = Bytes("x"), Value = Bytes("1") } };

        _f.Alarm(AlarmAction.Deactivate, 1, AlarmType.Nospace);
        _f.Apply(put).Error.Should().Be(EtcdErrors.NoSpace, "member 2's NOSPACE is still active");
        _f.Alarm(AlarmAction.Deactivate, 2, AlarmType.Nospace);
        _f.Apply(put).Error.Should().BeNull();
    }

    [Fact]
    public void Alarms_survive_a_restart_of_the_store()
    {
        var directory = Path.Combine(Path.GetTempPath(), "kvstore-alarms-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var store = MvccStore.Open(new MvccStoreOptions { DataDirectory = directory }, NullLogger.Instance))
            {
                var alarms = new AlarmState(store);
                using (var txn = store.BeginWrite(1))
                {
                    alarms.Apply(new AlarmRequest { Action = AlarmAction.Activate, MemberID = 42, Alarm = AlarmType.Nospace }, txn);
                    txn.Commit();
                }

                store.Checkpoint();
            }

            using (var reopened = MvccStore.Open(new MvccStoreOptions { DataDirectory = directory }, NullLogger.Instance))
            {
                var alarms = new AlarmState(reopened);
                alarms.NoSpace.Should().BeTrue();
                alarms.List(AlarmType.None).Should().ContainSingle().Which.MemberID.Should().Be(42);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Alarms_travel_in_a_snapshot_and_are_reloaded_by_the_member_that_installs_it()
    {
        _f.Alarm(AlarmAction.Activate, 3, AlarmType.Corrupt);
        var snapshots = Path.Combine(Path.GetTempPath(), "kvstore-alarm-snap-" + Guid.NewGuid().ToString("N"));
        var target = Path.Combine(Path.GetTempPath(), "kvstore-alarm-target-" + Guid.NewGuid().ToString("N"));
        try
        {
            var file = await _f.Store.CreateSnapshotFileAsync(snapshots);
            using var follower = MvccStore.Open(new MvccStoreOptions { DataDirectory = target }, NullLogger.Instance);
            var alarms = new AlarmState(follower);
            alarms.Corrupt.Should().BeFalse();

            follower.RestoreFrom(file);
            alarms.Load(follower);

            alarms.Corrupt.Should().BeTrue();
            alarms.List(AlarmType.Corrupt).Should().ContainSingle().Which.MemberID.Should().Be(3);
        }
        finally
        {
            Directory.Delete(snapshots, recursive: true);
            Directory.Delete(target, recursive: true);
        }
    }

    public void Dispose() => _f.Dispose();

    private static InternalRequest TxnWith(RequestOp op)
    {
        var txn = new TxnRequest();
        txn.Success.Add(op);
        return new InternalRequest { Txn = txn };
    }
}
