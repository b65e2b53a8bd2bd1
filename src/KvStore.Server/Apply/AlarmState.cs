using Etcdserverpb;
using Google.Protobuf;
using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// The cluster's alarms (NOSPACE, CORRUPT, each raised by one member), as replicated state: changed only by applying
/// an AlarmRequest entry from the log (<see cref="Apply"/>), persisted in the store's <see cref="BucketName"/> side
/// table in the same transaction as the entry's consistent index, and reloaded from the store at start and after a
/// snapshot install. Every member therefore holds the same alarms at the same log index, and the applier may consult
/// them. Readers on other threads see a consistent copy.
/// </summary>
public sealed class AlarmState
{
    /// <summary>The side-table bucket that holds the active alarms (key: the AlarmMember message, value: empty), as etcd's "alarm" bucket.</summary>
    public const string BucketName = "alarm";

    private volatile IReadOnlyList<AlarmMember> _active = [];

    /// <summary>Loads the persisted alarms of <paramref name="store"/>.</summary>
    public AlarmState(MvccStore store)
    {
        Load(store);
    }

    /// <summary>True while a NOSPACE alarm is active: writes that add data are refused.</summary>
    public bool NoSpace { get; private set; }

    /// <summary>True while a CORRUPT alarm is active: every write is refused.</summary>
    public bool Corrupt { get; private set; }

    /// <summary>Active alarms, optionally only of one type (None = all), ordered by member then type.</summary>
    public IReadOnlyList<AlarmMember> List(AlarmType filter) =>
        [.. _active.Where(a => filter == AlarmType.None || a.Alarm == filter).Select(a => a.Clone())];

    /// <summary>True if <paramref name="memberId"/> has raised <paramref name="alarm"/>.</summary>
    public bool IsActive(ulong memberId, AlarmType alarm) => _active.Any(a => a.MemberID == memberId && a.Alarm == alarm);

    /// <summary>Replaces the alarms with the ones persisted in <paramref name="store"/> (start, snapshot install).</summary>
    public void Load(MvccStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        Publish(store.ReadMeta(BucketName).Select(kv => AlarmMember.Parser.ParseFrom(kv.Key)));
    }

    /// <summary>
    /// Applies a committed alarm request inside <paramref name="txn"/> (apply loop only): GET lists, ACTIVATE raises
    /// (answering the alarm, also when it was already active), DEACTIVATE clears (answering the alarm only if it was
    /// active). Alarm type NONE changes nothing.
    /// </summary>
    public AlarmResponse Apply(AlarmRequest request, MvccWriteTxn txn)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(txn);
        var response = new AlarmResponse();
        var member = new AlarmMember { MemberID = request.MemberID, Alarm = request.Alarm };
        switch (request.Action)
        {
            case AlarmRequest.Types.AlarmAction.Get:
                response.Alarms.AddRange(List(request.Alarm));
                break;
            case AlarmRequest.Types.AlarmAction.Activate when request.Alarm != AlarmType.None:
                if (!IsActive(member.MemberID, member.Alarm))
                {
                    txn.PutMeta(BucketName, member.ToByteArray(), []);
                    Publish(_active.Append(member));
                }

                response.Alarms.Add(member);
                break;
            case AlarmRequest.Types.AlarmAction.Deactivate when IsActive(member.MemberID, member.Alarm):
                txn.DeleteMeta(BucketName, member.ToByteArray());
                Publish(_active.Where(a => !a.Equals(member)));
                response.Alarms.Add(member);
                break;
        }

        return response;
    }

    private void Publish(IEnumerable<AlarmMember> alarms)
    {
        var list = alarms.OrderBy(a => a.MemberID).ThenBy(a => a.Alarm).ToList();
        _active = list;
        NoSpace = list.Any(a => a.Alarm == AlarmType.Nospace);
        Corrupt = list.Any(a => a.Alarm == AlarmType.Corrupt);
    }
}
