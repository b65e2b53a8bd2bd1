using Etcdserverpb;

namespace KvStore.Server.Apply;

/// <summary>
/// Active alarms of this member (NOSPACE, CORRUPT). Kept in memory: after a restart the quota check raises NOSPACE
/// again on the next write that does not fit. Thread-safe.
/// </summary>
public sealed class AlarmState
{
    private readonly Lock _lock = new();
    private readonly HashSet<(ulong MemberId, AlarmType Alarm)> _active = [];
    private volatile bool _noSpace;

    /// <summary>True while a NOSPACE alarm is active (writes that add data are refused).</summary>
    public bool NoSpace => _noSpace;

    /// <summary>Active alarms, optionally only of one type (None = all).</summary>
    public IReadOnlyList<AlarmMember> List(AlarmType filter)
    {
        lock (_lock)
        {
            return _active
                .Where(a => filter == AlarmType.None || a.Alarm == filter)
                .OrderBy(a => a.MemberId)
                .Select(a => new AlarmMember { MemberID = a.MemberId, Alarm = a.Alarm })
                .ToList();
        }
    }

    /// <summary>Raises an alarm; returns the alarm member, or null for AlarmType.None.</summary>
    public AlarmMember? Activate(ulong memberId, AlarmType alarm)
    {
        if (alarm == AlarmType.None)
        {
            return null;
        }

        lock (_lock)
        {
            _active.Add((memberId, alarm));
            Refresh();
        }

        return new AlarmMember { MemberID = memberId, Alarm = alarm };
    }

    /// <summary>Clears an alarm; returns it if it was active.</summary>
    public AlarmMember? Deactivate(ulong memberId, AlarmType alarm)
    {
        lock (_lock)
        {
            if (!_active.Remove((memberId, alarm)))
            {
                return null;
            }

            Refresh();
        }

        return new AlarmMember { MemberID = memberId, Alarm = alarm };
    }

    private void Refresh() => _noSpace = _active.Any(a => a.Alarm == AlarmType.Nospace);
}
