using System.Reflection;

namespace KvStore.Server.Hosting;

/// <summary>Version strings: ours (logs, --version) and the etcd API level we report to clients (DESIGN §5).</summary>
public static class Versions
{
    /// <summary>The etcd server version we report in Status and /version (kube-apiserver gates features on &gt;= 3.5.13).</summary>
    public const string EtcdServer = "3.5.17";

    /// <summary>The cluster version we report in /version.</summary>
    public const string EtcdCluster = "3.5.0";

    /// <summary>kvstore's own version.</summary>
    public static string KvStore { get; } =
        typeof(Versions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";
}
