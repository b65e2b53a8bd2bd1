using System.Reflection;
using System.Runtime.InteropServices;

namespace KvStore.Server.Contract;

/// <summary>Version strings: ours (logs, --version) and the etcd API level we report to clients.</summary>
public static class Versions
{
    /// <summary>The etcd server version we report in Status and /version (kube-apiserver gates features on &gt;= 3.5.13).</summary>
    public const string EtcdServer = "3.5.17";

    /// <summary>The cluster version we report in /version.</summary>
    public const string EtcdCluster = "3.5.0";

    private static readonly string Informational =
        typeof(Versions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>kvstore's own version.</summary>
    public static string KvStore { get; } = Informational.Split('+')[0];

    /// <summary>
    /// What `kvstore --version` prints: etcd's lines (etcd Version, Git SHA, Go Version, Go OS/Arch) with our analogues
    /// (the API level, the source revision the build recorded, the .NET runtime, the platform), then our own version.
    /// </summary>
    public static string VersionText()
    {
        var plus = Informational.IndexOf('+', StringComparison.Ordinal);
        var sha = plus >= 0 ? Informational[(plus + 1)..] : "Not provided";
        var arch = RuntimeInformation.OSArchitecture switch
        {
            Architecture.X64 => "amd64",
            Architecture.Arm64 => "arm64",
            var other => other.ToString().ToLowerInvariant(),
        };
        var os = OperatingSystem.IsLinux() ? "linux" : RuntimeInformation.OSDescription;
        return $"etcd Version: {EtcdServer}\nGit SHA: {sha}\nGo Version: .NET {Environment.Version}\nGo OS/Arch: {os}/{arch}\nkvstore Version: {KvStore}\n";
    }
}
