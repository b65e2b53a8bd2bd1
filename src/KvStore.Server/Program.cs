using KvStore.Server.Backup;
using KvStore.Server.Hosting;
using KvStore.Server.Options;

// Offline verbs (etcdutl's shape) before the daemon's flags.
if (args.Length > 0 && args[0] == "snapshot")
{
    return SnapshotCommand.Run(args[1..], Console.Out, Console.Error);
}

ParseResult parsed;
try
{
    parsed = FlagParser.Parse(args, Environment.GetEnvironmentVariables());
}
catch (OptionsException e)
{
    await Console.Error.WriteLineAsync(e.Message);
    if (e.ExitCode == 2)
    {
        await Console.Error.WriteLineAsync("Run 'kvstore --help' for the list of flags.");
    }

    return e.ExitCode;
}

if (parsed.ShowHelp)
{
    await Console.Out.WriteAsync(Usage.Text);
    return 0;
}

if (parsed.ShowVersion)
{
    // etcd's four lines first, in its words, so scripts that parse `etcd --version` keep working.
    await Console.Out.WriteAsync(Versions.VersionText());
    return 0;
}

return await ServerHost.RunAsync(parsed.Options);
