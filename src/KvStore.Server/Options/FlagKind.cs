namespace KvStore.Server.Options;

/// <summary>How a flag's value is parsed (Go's flag package semantics).</summary>
internal enum FlagKind
{
    /// <summary>Any string.</summary>
    String,

    /// <summary>Go bool: 1, 0, t, f, T, F, true, false, TRUE, FALSE, True, False; "-flag" alone means true.</summary>
    Bool,

    /// <summary>A signed 64-bit integer (decimal, 0x hex or 0 octal as Go's strconv with base 0).</summary>
    Int,

    /// <summary>An unsigned 64-bit integer.</summary>
    Uint,

    /// <summary>A Go duration ("5s", "1m30s", "100ms").</summary>
    Duration,

    /// <summary>A comma-separated list of URLs.</summary>
    Urls,
}

/// <summary>What we do with a flag etcd knows.</summary>
internal enum FlagSupport
{
    /// <summary>Implemented: the value changes our behaviour as it changes etcd's.</summary>
    Supported,

    /// <summary>
    /// Accepted, but has no counterpart in our design (e.g. bbolt tuning, number of retained WAL files);
    /// any valid value is accepted and logged at start. Listed in docs/configuration.md.
    /// </summary>
    NoEffect,

    /// <summary>
    /// Not implemented yet: start fails naming the flag, unless the value given equals etcd's default
    /// (then the flag asks for exactly what we do anyway).
    /// </summary>
    Unsupported,
}
