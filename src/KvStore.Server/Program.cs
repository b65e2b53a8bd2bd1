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
    await Console.Out.WriteLineAsync($"kvstore Version: {Versions.KvStore}");
    await Console.Out.WriteLineAsync($"etcd API Version: {Versions.EtcdServer}");
    await Console.Out.WriteLineAsync($".NET Version: {Environment.Version}");
    return 0;
}

return await ServerHost.RunAsync(parsed.Options);
