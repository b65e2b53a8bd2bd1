namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// Every multi-member test runs in this collection: one test at a time, and (DisableParallelization) not alongside
/// any other test class either, because their timing assertions (a new leader within 3 s of a SIGKILL, request
/// timeouts) must not compete for the CPU with a write storm of another test, and the partition test changes
/// iptables inside its namespaces.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterTestGroup
{
    public const string Name = "Cluster: real multi-member processes, one test at a time";
}
