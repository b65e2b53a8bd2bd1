using System.Globalization;

namespace KvStore.Server.Options;

/// <summary>How auto-compaction decides (etcd's two compactor modes).</summary>
public enum AutoCompactionMode
{
    /// <summary>Keep a time window of history.</summary>
    Periodic,

    /// <summary>Keep a number of revisions of history.</summary>
    Revision,
}

/// <summary>
/// --auto-compaction-mode and --auto-compaction-retention, parsed as etcd parses them: a non-negative integer is hours in
/// periodic mode and revisions in revision mode; anything else must be a Go duration (and, in revision mode, etcd then
/// uses its nanoseconds as the revision count). A retention of 0 turns auto-compaction off.
/// </summary>
public sealed record AutoCompactionPolicy(AutoCompactionMode Mode, TimeSpan Period, long Revisions)
{
    /// <summary>The policy the flags ask for, or null when auto-compaction is off.</summary>
    /// <exception cref="OptionsException">Unknown mode or unparsable retention (etcd's messages).</exception>
    public static AutoCompactionPolicy? From(string mode, string retention)
    {
        ArgumentNullException.ThrowIfNull(mode);
        ArgumentNullException.ThrowIfNull(retention);
        var parsedMode = mode switch
        {
            "periodic" or "" => AutoCompactionMode.Periodic,
            "revision" => AutoCompactionMode.Revision,
            _ => throw new OptionsException($"error verifying flags, unknown auto-compaction-mode \"{mode}\". See 'kvstore --help'."),
        };

        TimeSpan period;
        long revisions;
        if (int.TryParse(retention, NumberStyles.None, CultureInfo.InvariantCulture, out var number))
        {
            period = TimeSpan.FromHours(number);
            revisions = number;
        }
        else if (GoValues.TryParseDuration(retention, out period) && period >= TimeSpan.Zero)
        {
            revisions = period.Ticks * 100; // etcd reads the duration's nanoseconds as the count
        }
        else
        {
            var why = retention.Length > 0 && retention.TrimStart('-').All(char.IsAsciiDigit) ? "missing unit in duration" : "invalid duration";
            throw new OptionsException($"error parsing CompactionRetention: time: {why} \"{retention}\"");
        }

        if (parsedMode == AutoCompactionMode.Periodic ? period == TimeSpan.Zero : revisions == 0)
        {
            return null;
        }

        return new AutoCompactionPolicy(parsedMode, period, revisions);
    }

    /// <summary>How the policy reads in logs.</summary>
    public override string ToString() => Mode == AutoCompactionMode.Periodic
        ? $"periodic, keeping {GoDuration(Period)} of history"
        : $"revision, keeping {Revisions} revisions";

    /// <summary>Go's time.Duration text (1h0m0s, 5m0s, 2.5s, 500ms), as etcd logs periods.</summary>
    public static string GoDuration(TimeSpan d)
    {
        if (d < TimeSpan.FromSeconds(1))
        {
            return string.Create(CultureInfo.InvariantCulture, $"{d.TotalMilliseconds:0.###}ms");
        }

        var seconds = (d.TotalSeconds % 60).ToString("0.#########", CultureInfo.InvariantCulture) + "s";
        var hours = (long)d.TotalHours;
        var minutes = d.Minutes;
        return hours > 0 ? $"{hours}h{minutes}m{seconds}" : minutes > 0 ? $"{minutes}m{seconds}" : seconds;
    }
}
