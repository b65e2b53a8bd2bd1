using System.Globalization;

namespace KvStore.EndToEnd.Linearizability;

/// <summary>What a client asked of one key.</summary>
public enum KvOpKind
{
    /// <summary>Read the key; the output is the value seen, or absent.</summary>
    Read,

    /// <summary>Put a value (unconditionally).</summary>
    Write,

    /// <summary>Delete the key (a no-op when it is absent).</summary>
    Delete,

    /// <summary>Put a value only if the key holds the expected value (or is absent, when none is expected); the output says whether it did.</summary>
    Cas,
}

/// <summary>How an operation ended, as the client saw it.</summary>
public enum KvOutcome
{
    /// <summary>The server answered: the output is known.</summary>
    Ok,

    /// <summary>The request certainly never reached the server (connection refused): it had no effect and is left out of the check.</summary>
    Failed,

    /// <summary>Timed out or lost with the connection: it may take effect at any time after its invocation, or never.</summary>
    Unknown,
}

/// <summary>
/// One operation on one key, with its real-time interval: <see cref="Invoked"/> before the request left the client,
/// <see cref="Completed"/> after its answer arrived (both monotonic timestamps). Values are written at most once
/// (the clients make them unique), so a value names the write that produced it.
/// </summary>
/// <param name="Id">Unique within a history; used to name the operation in reports.</param>
/// <param name="Client">The client (thread) that issued it.</param>
/// <param name="Member">The member it was sent to (for reports only).</param>
/// <param name="Key">The key it touches: the checker looks at each key on its own.</param>
/// <param name="Kind">Read, write, delete or compare-and-set.</param>
/// <param name="Value">The value a write or cas puts.</param>
/// <param name="Expected">The value a cas compares against; null means "the key is absent".</param>
/// <param name="Invoked">When the request was sent.</param>
/// <param name="Completed">When the answer came (ignored unless the outcome is <see cref="KvOutcome.Ok"/>).</param>
/// <param name="Outcome">Ok, failed (no effect) or unknown.</param>
/// <param name="Observed">For an ok read: the value seen, null when the key was absent.</param>
/// <param name="Succeeded">For an ok cas: whether the comparison held and the value was put.</param>
public sealed record KvOperation(
    int Id,
    int Client,
    string Member,
    string Key,
    KvOpKind Kind,
    string? Value,
    string? Expected,
    long Invoked,
    long Completed,
    KvOutcome Outcome,
    string? Observed = null,
    bool Succeeded = false)
{
    public override string ToString()
    {
        var what = Kind switch
        {
            KvOpKind.Read => $"read {Key}",
            KvOpKind.Write => $"write {Key}={Value}",
            KvOpKind.Delete => $"delete {Key}",
            _ => $"cas {Key} {Show(Expected)}->{Value}",
        };
        var result = Outcome switch
        {
            KvOutcome.Ok when Kind == KvOpKind.Read => " -> " + Show(Observed),
            KvOutcome.Ok when Kind == KvOpKind.Cas => Succeeded ? " -> swapped" : " -> not swapped",
            KvOutcome.Ok => " -> ok",
            KvOutcome.Failed => " -> failed (no effect)",
            _ => " -> unknown",
        };
        var end = Outcome == KvOutcome.Ok ? Completed.ToString(CultureInfo.InvariantCulture) : "?";
        return $"#{Id} c{Client}@{Member} [{Invoked.ToString(CultureInfo.InvariantCulture)}, {end}] {what}{result}";
    }

    private static string Show(string? v) => v ?? "(absent)";
}
