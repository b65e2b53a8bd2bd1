namespace KvStore.Server.Options;

/// <summary>One etcd flag: its name (without dashes), how to parse it, etcd's default and what we do with it.</summary>
/// <param name="Name">Flag name as etcd spells it, e.g. "data-dir".</param>
/// <param name="Kind">Value syntax.</param>
/// <param name="Default">etcd's default, as etcd prints it in --help.</param>
/// <param name="Support">Whether we implement it.</param>
/// <param name="Apply">Stores the (already syntax-checked) value into the options; null for flags without effect.</param>
/// <param name="Reason">For an unsupported flag: why, said in the error at start.</param>
internal sealed record FlagSpec(
    string Name,
    FlagKind Kind,
    string Default,
    FlagSupport Support,
    Action<ServerOptions, string>? Apply = null,
    string? Reason = null)
{
    /// <summary>The ETCD_* environment variable for this flag (etcd: upper case, dashes become underscores).</summary>
    public string EnvName { get; } = "ETCD_" + Name.ToUpperInvariant().Replace('-', '_');
}
