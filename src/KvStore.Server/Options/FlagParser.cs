using System.Collections;

namespace KvStore.Server.Options;

/// <summary>What the command line asked for.</summary>
/// <param name="Options">The configuration (valid only when neither <paramref name="ShowVersion"/> nor <paramref name="ShowHelp"/>).</param>
/// <param name="ShowVersion">--version was given.</param>
/// <param name="ShowHelp">-h / --help was given.</param>
public sealed record ParseResult(ServerOptions Options, bool ShowVersion, bool ShowHelp);

/// <summary>
/// Parses etcd's command line (Go flag syntax), ETCD_* environment variables and --config-file, the way etcd does:
/// a flag may be written -flag or --flag, with "=value" or as the next argument (booleans only as -flag or -flag=value);
/// parsing stops at the first non-flag argument or "--", and any leftover argument is an error; an environment variable
/// for a flag also given on the command line is an error ("conflicting environment variable"); with --config-file every
/// other flag and variable is ignored.
/// </summary>
public static class FlagParser
{
    /// <summary>Parses <paramref name="args"/> and the environment.</summary>
    /// <exception cref="OptionsException">The configuration is invalid or asks for something we do not support.</exception>
    public static ParseResult Parse(IReadOnlyList<string> args, IDictionary environment)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(environment);

        var fromArgs = new Dictionary<string, string>(StringComparer.Ordinal);
        var showVersion = false;
        var showHelp = false;
        string? configFile = null;
        var i = 0;
        for (; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg.Length < 2 || arg[0] != '-')
            {
                break;
            }

            var nameStart = arg[1] == '-' ? 2 : 1;
            if (nameStart == 2 && arg.Length == 2)
            {
                // "--" ends the flags.
                i++;
                break;
            }

            var body = arg[nameStart..];
            if (body.Length == 0 || body[0] == '-' || body[0] == '=')
            {
                throw new OptionsException($"bad flag syntax: {arg}", 2);
            }

            var eq = body.IndexOf('=', StringComparison.Ordinal);
            var name = eq >= 0 ? body[..eq] : body;
            string? value = eq >= 0 ? body[(eq + 1)..] : null;

            if (name is "h" or "help")
            {
                showHelp = true;
                continue;
            }

            if (name == "version")
            {
                if (value is not null && !GoValues.TryParseBool(value, out _))
                {
                    throw new OptionsException($"invalid boolean value \"{value}\" for -{name}: parse error", 2);
                }

                showVersion = value is null || (GoValues.TryParseBool(value, out var v) && v);
                continue;
            }

            var spec = FlagTable.Find(name);
            if (spec is null && name != "config-file")
            {
                throw new OptionsException($"flag provided but not defined: -{name}", 2);
            }

            var kind = spec?.Kind ?? FlagKind.String;
            if (value is null)
            {
                if (kind == FlagKind.Bool)
                {
                    value = "true";
                }
                else if (i + 1 < args.Count)
                {
                    value = args[++i];
                }
                else
                {
                    throw new OptionsException($"flag needs an argument: -{name}", 2);
                }
            }

            if (spec is null)
            {
                configFile = value;
                continue;
            }

            CheckSyntax(spec, value, $"-{name}", 2);
            fromArgs[name] = value;
        }

        if (i < args.Count)
        {
            throw new OptionsException($"error verifying flags, '{args[i]}' is not a valid flag. See 'kvstore --help'.");
        }

        var options = new ServerOptions();
        if (showHelp || showVersion)
        {
            return new ParseResult(options, showVersion, showHelp);
        }

        configFile ??= Environment(environment, "ETCD_CONFIG_FILE");
        Dictionary<string, string> values;
        if (!string.IsNullOrEmpty(configFile))
        {
            values = ConfigFile.Load(configFile);
            foreach (var (name, value) in values)
            {
                var spec = FlagTable.Find(name) ?? throw new OptionsException($"error verifying flags, config file {configFile}: unknown field \"{name}\"");
                CheckSyntax(spec, value, $"\"{name}\" in {configFile}", 1);
            }
        }
        else
        {
            values = fromArgs;
            MergeEnvironment(environment, fromArgs, options.Warnings);
        }

        foreach (var (name, value) in values)
        {
            var spec = FlagTable.Find(name)!;
            switch (spec.Support)
            {
                case FlagSupport.Supported:
                    spec.Apply!(options, value);
                    break;
                case FlagSupport.NoEffect:
                    options.Warnings.Add($"flag --{name}={value} is accepted but has no effect in kvstore (see docs/configuration.md)");
                    break;
                case FlagSupport.Unsupported:
                    if (!EqualsDefault(spec, value))
                    {
                        var reason = spec.Reason is null ? string.Empty : $": {spec.Reason}";
                        throw new OptionsException($"flag --{name} is not supported by kvstore yet{reason} (given \"{value}\"; only etcd's default \"{spec.Default}\" is accepted)");
                    }

                    break;
            }
        }

        ApplyDerivedDefaults(options, values);
        Validate(options);
        return new ParseResult(options, false, false);
    }

    private static string? Environment(IDictionary environment, string name) =>
        environment.Contains(name) ? environment[name] as string : null;

    private static void MergeEnvironment(IDictionary environment, Dictionary<string, string> values, IList<string> warnings)
    {
        var fromEnvironment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in environment)
        {
            if (entry.Key is not string key || !key.StartsWith("ETCD_", StringComparison.Ordinal) || entry.Value is not string value)
            {
                continue;
            }

            if (key is "ETCD_CONFIG_FILE" or "ETCD_VERSION" or "ETCD_HELP")
            {
                continue;
            }

            var name = key["ETCD_".Length..].ToLowerInvariant().Replace('_', '-');
            var spec = FlagTable.Find(name);
            if (spec is null)
            {
                warnings.Add($"unrecognized environment variable {key}={value}");
                continue;
            }

            if (values.ContainsKey(name))
            {
                throw new OptionsException($"conflicting environment variable \"{key}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)");
            }

            CheckSyntax(spec, value, key, 1);
            fromEnvironment[name] = value;
        }

        foreach (var (name, value) in fromEnvironment)
        {
            values[name] = value;
        }
    }

    private static void CheckSyntax(FlagSpec spec, string value, string where, int exitCode)
    {
        var prefix = exitCode == 2 ? string.Empty : "error verifying flags, ";
        var ok = spec.Kind switch
        {
            FlagKind.Bool => GoValues.TryParseBool(value, out _),
            FlagKind.Int => GoValues.TryParseInt(value, out _),
            FlagKind.Uint => GoValues.TryParseUint(value, out _),
            FlagKind.Duration => GoValues.TryParseDuration(value, out _),
            _ => true,
        };
        if (!ok)
        {
            var what = spec.Kind == FlagKind.Bool ? "boolean value" : "value";
            throw new OptionsException($"{prefix}invalid {what} \"{value}\" for {where}: parse error", exitCode);
        }

        if (spec.Kind == FlagKind.Urls && !GoValues.TryParseUrls(value, out _, out var error))
        {
            throw new OptionsException($"{prefix}invalid value \"{value}\" for {where}: {error}", exitCode);
        }
    }

    private static bool EqualsDefault(FlagSpec spec, string value) => spec.Kind switch
    {
        FlagKind.Bool => GoValues.TryParseBool(value, out var b) && GoValues.TryParseBool(spec.Default, out var d) && b == d,
        FlagKind.Int => GoValues.TryParseInt(value, out var n) && GoValues.TryParseInt(spec.Default, out var dn) && n == dn,
        FlagKind.Uint => GoValues.TryParseUint(value, out var u) && GoValues.TryParseUint(spec.Default, out var du) && u == du,
        FlagKind.Duration => GoValues.TryParseDuration(value, out var t) && GoValues.TryParseDuration(spec.Default, out var dt) && t == dt,
        _ => string.Equals(value, spec.Default, StringComparison.Ordinal),
    };

    private static void ApplyDerivedDefaults(ServerOptions options, Dictionary<string, string> values)
    {
        // Asking for etcd's zap logger asks for its JSON lines; --log-format (ours) still decides when given.
        if (values.TryGetValue("logger", out var logger) && logger == "zap" && !values.ContainsKey("log-format"))
        {
            options.LogFormat = "json";
        }

        // etcd: a member named other than "default" with the default --initial-cluster bootstraps as "<name>=<advertised peer urls>".
        if (!values.ContainsKey("initial-cluster") && options.Name != ServerOptions.DefaultName)
        {
            options.InitialCluster = string.Join(',', options.InitialAdvertisePeerUrls.Select(u => $"{options.Name}={UrlText(u)}"));
        }
    }

    private static void Validate(ServerOptions options)
    {
        // Throws etcd's messages for an unknown mode or a bad retention.
        _ = AutoCompactionPolicy.From(options.AutoCompactionMode, options.AutoCompactionRetention);

        // etcd crashes on a negative period; refuse it at start instead.
        if (options.CorruptCheckTime < TimeSpan.Zero)
        {
            throw new OptionsException("error verifying flags, --experimental-corrupt-check-time must not be negative");
        }

        if (options.InitialClusterState is not ("new" or "existing"))
        {
            throw new OptionsException($"error verifying flags, invalid value \"{options.InitialClusterState}\" for flag -initial-cluster-state: valid values are \"new\", \"existing\"");
        }

        if (options.Logger is not ("zap" or "capnslog"))
        {
            throw new OptionsException($"error verifying flags, unknown logger option \"{options.Logger}\" (valid: zap)");
        }

        if (options.LogLevel is not ("debug" or "info" or "warn" or "error" or "dpanic" or "panic" or "fatal"))
        {
            throw new OptionsException($"error verifying flags, unknown log level \"{options.LogLevel}\" (valid: debug, info, warn, error, panic, fatal)");
        }

        if (options.LogFormat is not ("text" or "json"))
        {
            throw new OptionsException($"error verifying flags, invalid value \"{options.LogFormat}\" for flag -log-format: valid values are \"text\", \"json\"");
        }

        if (options.Metrics is not ("basic" or "extensive"))
        {
            throw new OptionsException($"error verifying flags, invalid value \"{options.Metrics}\" for flag -metrics: valid values are \"basic\", \"extensive\"");
        }

        if (options.HeartbeatIntervalMs <= 0 || options.ElectionTimeoutMs < 5 * options.HeartbeatIntervalMs)
        {
            throw new OptionsException($"--election-timeout[{options.ElectionTimeoutMs}ms] should be at least as 5 times as --heartbeat-interval[{options.HeartbeatIntervalMs}ms]");
        }

        if (options.ElectionTimeoutMs > 50000)
        {
            throw new OptionsException($"--election-timeout[{options.ElectionTimeoutMs}ms] is too long, and should be set less than 50000ms");
        }

        if (options.MaxRequestBytes > int.MaxValue - ServerOptions.GrpcOverheadBytes)
        {
            throw new OptionsException($"--max-request-bytes={options.MaxRequestBytes} is larger than kvstore can accept ({int.MaxValue - ServerOptions.GrpcOverheadBytes})");
        }

        if (options.ListenClientUrls.Count == 0)
        {
            throw new OptionsException("--listen-client-urls must list at least one URL");
        }

        ValidateAuth(options);
        TlsPolicy.From(options);

        foreach (var url in options.ListenClientUrls.Concat(options.ListenPeerUrls).Concat(options.ListenMetricsUrls))
        {
            if (url.Scheme is "unix" or "unixs")
            {
                throw new OptionsException($"listening on unix sockets ({url}) is not supported by kvstore yet");
            }
        }

        foreach (var url in options.ListenClientUrls.Concat(options.ListenMetricsUrls))
        {
            if (url.Scheme == "https" && !options.ClientTls.Enabled && !options.ClientTls.AutoTls)
            {
                throw new OptionsException($"TLS key/cert (--cert-file, --key-file) must be provided for client url {UrlText(url)} with HTTPS scheme");
            }
        }

        foreach (var url in options.ListenPeerUrls)
        {
            if (url.Scheme == "https" && !options.PeerTls.Enabled && !options.PeerTls.AutoTls)
            {
                throw new OptionsException($"TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {UrlText(url)} with HTTPS scheme");
            }
        }

        if (options.ClientTls.ClientCertAuth && options.ClientTls.TrustedCaFile.Length == 0)
        {
            throw new OptionsException("--client-cert-auth requires --trusted-ca-file");
        }

        if (options.PeerTls.ClientCertAuth && options.PeerTls.TrustedCaFile.Length == 0)
        {
            throw new OptionsException("--peer-client-cert-auth requires --peer-trusted-ca-file");
        }

        if ((options.ClientTls.ClientCertFile.Length == 0) != (options.ClientTls.ClientKeyFile.Length == 0))
        {
            throw new OptionsException("--client-cert-file and --client-key-file must be given together");
        }

        if ((options.PeerTls.ClientCertFile.Length == 0) != (options.PeerTls.ClientKeyFile.Length == 0))
        {
            throw new OptionsException("--peer-client-cert-file and --peer-client-key-file must be given together");
        }

        if (options.ClientTls.AllowedHostname.Length > 0 && !options.ClientTls.ClientCertAuth)
        {
            throw new OptionsException("--client-cert-allowed-hostname requires --client-cert-auth (it restricts which client certificates are accepted)");
        }

        var cluster = InitialCluster.Parse(options.InitialCluster);
        if (!cluster.TryGetValue(options.Name, out var ownUrls))
        {
            throw new OptionsException($"couldn't find local name \"{options.Name}\" in the initial cluster configuration");
        }

        var advertised = options.InitialAdvertisePeerUrls.Select(UrlText).Order(StringComparer.Ordinal).ToArray();
        var listed = ownUrls.Order(StringComparer.Ordinal).ToArray();
        if (options.InitialClusterState == "new" && !advertised.SequenceEqual(listed, StringComparer.Ordinal))
        {
            throw new OptionsException(
                $"--initial-cluster has {options.Name}={string.Join(',', listed)} but missing from --initial-advertise-peer-urls={string.Join(',', advertised)}");
        }
    }

    /// <summary>A URL as etcd prints it (scheme://host:port, no trailing slash).</summary>
    public static string UrlText(Uri url)
    {
        ArgumentNullException.ThrowIfNull(url);
        return url.GetLeftPart(UriPartial.Authority);
    }

    /// <summary>--bcrypt-cost within bcrypt's bounds; --auth-token "simple" or a well-formed "jwt,..." (keys are read at start).</summary>
    private static void ValidateAuth(ServerOptions options)
    {
        if (options.BcryptCost is < ServerOptions.MinBcryptCost or > ServerOptions.MaxBcryptCost)
        {
            throw new OptionsException($"error verifying flags, invalid value {options.BcryptCost} for flag -bcrypt-cost: must be between {ServerOptions.MinBcryptCost} and {ServerOptions.MaxBcryptCost}");
        }

        var type = options.AuthToken.Split(',')[0];
        if (type == "jwt")
        {
            try
            {
                JwtOptions.Parse(options.AuthToken);
            }
            catch (FormatException e)
            {
                throw new OptionsException($"error verifying flags, {e.Message}");
            }
        }
        else if (type != "simple")
        {
            throw new OptionsException($"error verifying flags, unknown token type \"{type}\" for flag -auth-token (valid: simple, jwt)");
        }
    }
}
