namespace KvStore.Server.Options;

/// <summary>
/// etcd 3.6's --feature-gates (<c>Name=true,Other=false</c>): the gates that replace experimental flags. A gate
/// kvstore implements sets the same option as its experimental flag; one it does not implement may only be off.
/// </summary>
internal static class FeatureGates
{
    private static readonly Dictionary<string, Action<ServerOptions, bool>> Implemented = new(StringComparer.Ordinal)
    {
        ["InitialCorruptCheck"] = (o, on) => o.InitialCorruptCheck = on,
        ["LeaseCheckpoint"] = (o, on) => o.LeaseCheckpointEnabled = on,

        // bbolt's shared write buffer: nothing to switch in kvstore's store, either value reads the same.
        ["TxnModeWriteWithSharedBuffer"] = (_, _) => { },
    };

    /// <summary>etcd's gates kvstore does not implement (each off by default in etcd), and what is missing.</summary>
    private static readonly Dictionary<string, string> NotImplemented = new(StringComparer.Ordinal)
    {
        ["StopGRPCServiceOnDefrag"] = "defragmentation does not stop the gRPC health service",
        ["CompactHashCheck"] = "the compact hash check is not implemented",
        ["LeaseCheckpointPersist"] = "lease checkpoints are not persisted",
        ["SetMemberLocalAddr"] = "outgoing peer connections do not bind to the advertised address",
        ["AllAlpha"] = "it would turn on alpha gates kvstore does not implement",
        ["AllBeta"] = "it would turn on beta gates kvstore does not implement",
    };

    public static void Apply(ServerOptions options, string value)
    {
        foreach (var pair in value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            var name = eq < 0 ? pair : pair[..eq].Trim();
            if (eq < 0)
            {
                throw new OptionsException($"invalid value \"{value}\" for flag -feature-gates: missing bool value for {name}");
            }

            var text = pair[(eq + 1)..].Trim();
            if (!GoValues.TryParseBool(text, out var on))
            {
                throw new OptionsException($"invalid value \"{value}\" for flag -feature-gates: invalid value of {name}={text}");
            }

            if (Implemented.TryGetValue(name, out var set))
            {
                set(options, on);
            }
            else if (NotImplemented.TryGetValue(name, out var why))
            {
                if (on)
                {
                    throw new OptionsException($"flag --feature-gates: {name}=true is not supported by kvstore yet: {why}");
                }
            }
            else
            {
                throw new OptionsException($"invalid value \"{value}\" for flag -feature-gates: unrecognized feature gate: {name}");
            }
        }
    }
}
