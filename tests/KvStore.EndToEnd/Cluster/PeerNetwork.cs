using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// A private network for the members of one cluster, made only of network namespaces this object creates: a hub
/// namespace holding a bridge, one namespace per member and one for the test's clients, each joined to the bridge
/// by a veth pair, member i with address 10.213.0.(i+1)/24 and the clients with 10.213.0.254 (addresses exist only
/// inside these namespaces; the host's interfaces, routes and iptables are never touched). A member listens for
/// clients and peers on its own address; the test process stays in the host's namespace and opens its client
/// connections in the clients' namespace (<see cref="Clients"/>), etcdctl runs inside the member's namespace.
/// Partitions are iptables rules inside the member namespaces that silently drop packets between members, never
/// the clients' (<see cref="IsolateAsync"/>, <see cref="DropRaftMessagesAsync"/>); <see cref="HealAsync"/> removes
/// them. Names are kvs-&lt;test pid&gt;-&lt;n&gt;-*, so parallel test processes never clash, and the first network of
/// a process deletes those left by test processes that no longer run. Dispose deletes every namespace (the veth
/// pairs, addresses and rules go with them); it must run after the members are killed. Needs root, `ip`
/// (iproute2) and `iptables`: the tests fail without them.
/// </summary>
public sealed partial class PeerNetwork : IDisposable
{
    public const int ClientPort = 2379;
    public const int PeerPort = 2380;

    private const string Subnet = "10.213.0.";
    private const string ClientAddress = Subnet + "254";

    // Namespaces still present when the test host exits (a test aborted mid-way) are deleted then.
    private static readonly ConcurrentDictionary<string, byte> Created = new();
    private static readonly Lazy<Task> StaleRemoved = new(RemoveStaleAsync);
    private static int _networks;

    private readonly ITestOutputHelper _output;
    private readonly string _ip;
    private readonly string _iptables;
    private readonly List<string> _rules = [];
    private readonly string _prefix;
    private readonly int _size;
    private NamespaceSockets? _clients;

    static PeerNetwork() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        foreach (var ns in Created.Keys)
        {
            DeleteNamespace(ns);
        }
    };

    private PeerNetwork(ITestOutputHelper output, int size)
    {
        _output = output;
        _size = size;
        _ip = Tools.Require("ip", "iproute2");
        _iptables = Tools.Require("iptables", "iptables");
        _prefix = $"kvs-{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Interlocked.Increment(ref _networks).ToString(CultureInfo.InvariantCulture)}";
    }

    public string Hub => _prefix + "-hub";

    /// <summary>The namespace of the test's client connections.</summary>
    public string ClientNamespace => _prefix + "-c";

    /// <summary>Creates the test's client sockets inside <see cref="ClientNamespace"/>.</summary>
    public NamespaceSockets Clients => _clients ?? throw new InvalidOperationException("the network is not set up");

    public string Namespace(int i) => $"{_prefix}-m{i}";

    public static string Address(int i) => Subnet + (i + 1).ToString(CultureInfo.InvariantCulture);

    public static async Task<PeerNetwork> CreateAsync(ITestOutputHelper output, int size)
    {
        var net = new PeerNetwork(output, size);
        try
        {
            var id = await Tools.RunAsync(Tools.Require("id", "coreutils"), ["-u"]);
            if (id.Stdout.Trim() != "0")
            {
                throw new InvalidOperationException(
                    $"the tests that partition peer traffic need root (network namespaces and iptables); running as uid {id.Stdout.Trim()}. Run tests/run-all.sh as root.");
            }

            await StaleRemoved.Value;
            await net.AddNamespaceAsync(net.Hub);
            await net.IpAsync("-n", net.Hub, "link", "add", "br0", "type", "bridge");
            await net.IpAsync("-n", net.Hub, "link", "set", "br0", "up");
            for (var i = 0; i < size; i++)
            {
                await net.AttachAsync(net.Namespace(i), "v" + i.ToString(CultureInfo.InvariantCulture), Address(i));
            }

            await net.AttachAsync(net.ClientNamespace, "vc", ClientAddress);
            net._clients = new NamespaceSockets(net.ClientNamespace);

            // Every member namespace reaches every other, and the clients reach every member, before a server starts.
            for (var i = 0; i < size; i++)
            {
                await net.WaitReachableAsync(net.ClientNamespace, Address(i));
                for (var j = 0; j < size; j++)
                {
                    if (i != j)
                    {
                        await net.WaitReachableAsync(net.Namespace(i), Address(j));
                    }
                }
            }

            output.WriteLine($"network {net._prefix}: hub {net.Hub}, clients {net.ClientNamespace}={ClientAddress}, members {string.Join(", ", Enumerable.Range(0, size).Select(i => $"{net.Namespace(i)}={Address(i)}"))}");
            return net;
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Cuts member <paramref name="i"/> off from every other member, both ways: it drops every packet from them and
    /// they drop every packet from it. The clients' namespace still reaches every member.
    /// </summary>
    public async Task IsolateAsync(int i)
    {
        for (var j = 0; j < _size; j++)
        {
            if (j != i)
            {
                await AddRuleAsync(Namespace(i), ["INPUT", "-s", Address(j), "-j", "DROP"]);
                await AddRuleAsync(Namespace(j), ["INPUT", "-s", Address(i), "-j", "DROP"]);
            }
        }
    }

    /// <summary>
    /// One direction: member <paramref name="to"/> stops receiving the raft messages of member <paramref name="from"/>.
    /// A member sends its messages on connections it opens to the other's peer port (and reads the answers on the
    /// other's connections to it), so dropping, at <paramref name="to"/>, what <paramref name="from"/> sends to that
    /// port loses exactly those messages while <paramref name="to"/>'s own messages still reach <paramref name="from"/>.
    /// Dropping every packet one way would not do: TCP would stall both ways for want of acknowledgements.
    /// </summary>
    public async Task DropRaftMessagesAsync(int from, int to) =>
        await AddRuleAsync(Namespace(to), ["INPUT", "-s", Address(from), "-p", "tcp", "--dport", PeerPort.ToString(CultureInfo.InvariantCulture), "-j", "DROP"]);

    /// <summary>Removes every rule added here (by the exact rule, -D), leaving the namespaces as created.</summary>
    public async Task HealAsync()
    {
        var failures = new List<string>();
        foreach (var rule in _rules.ToList())
        {
            var parts = rule.Split(' ');
            var r = await Tools.RunAsync(_ip, ["netns", "exec", parts[0], _iptables, "-w", "-D", .. parts[1..]]);
            if (r.ExitCode != 0)
            {
                failures.Add(r.ToString());
            }
            else
            {
                _rules.Remove(rule);
            }
        }

        _output.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} partition healed");
        failures.Should().BeEmpty("every iptables rule the test added must be removable");
    }

    public void Dispose()
    {
        _clients?.Dispose();
        for (var i = 0; i < _size; i++)
        {
            DeleteNamespace(Namespace(i));
        }

        DeleteNamespace(ClientNamespace);
        DeleteNamespace(Hub);
    }

    /// <summary>Deletes the namespaces of networks whose test process (the pid in the name) no longer runs.</summary>
    private static async Task RemoveStaleAsync()
    {
        var ip = Tools.Require("ip", "iproute2");
        var list = await Tools.RunAsync(ip, ["netns", "list"]);
        foreach (var line in list.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var ns = line.Split(' ')[0];
            if (OwnName().Match(ns) is { Success: true } m && !Directory.Exists("/proc/" + m.Groups[1].Value))
            {
                await Tools.RunAsync(ip, ["netns", "del", ns]);
            }
        }
    }

    [GeneratedRegex(@"^kvs-(\d+)-\d+-(hub|c|m\d+)$")]
    private static partial Regex OwnName();

    private static void DeleteNamespace(string ns)
    {
        if (!Created.ContainsKey(ns))
        {
            return;
        }

        // Synchronous on purpose: it also runs from ProcessExit. Deleting the namespace removes its veth end
        // (and so the pair), its addresses and its iptables rules.
        using var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(Tools.Find("ip") ?? "ip", ["netns", "del", ns])
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        });
        if (p is not null && p.WaitForExit(30_000) && p.ExitCode == 0)
        {
            Created.TryRemove(ns, out _);
        }
    }

    private async Task AddNamespaceAsync(string ns)
    {
        await IpAsync("netns", "add", ns);
        Created[ns] = 0;
    }

    private async Task AddRuleAsync(string ns, string[] rule)
    {
        var r = await Tools.RunAsync(_ip, ["netns", "exec", ns, _iptables, "-w", "-A", .. rule]);
        r.ExitCode.Should().Be(0, "iptables must accept the rule:\n{0}", r);
        _rules.Add(ns + " " + string.Join(' ', rule));
        _output.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} {ns}: iptables -A {string.Join(' ', rule)}");
    }

    /// <summary>Adds namespace <paramref name="ns"/> with an eth0 on the bridge (veth pair, hub end <paramref name="hubSide"/>) holding <paramref name="address"/>.</summary>
    private async Task AttachAsync(string ns, string hubSide, string address)
    {
        await AddNamespaceAsync(ns);
        await IpAsync("-n", Hub, "link", "add", hubSide, "type", "veth", "peer", "name", "eth0", "netns", ns);
        await IpAsync("-n", Hub, "link", "set", hubSide, "master", "br0", "up");
        await IpAsync("-n", ns, "addr", "add", address + "/24", "dev", "eth0");
        await IpAsync("-n", ns, "link", "set", "eth0", "up");
        await IpAsync("-n", ns, "link", "set", "lo", "up");
    }

    private async Task WaitReachableAsync(string fromNs, string address)
    {
        var ping = Tools.Find("ping");
        if (ping is null)
        {
            return; // the servers' own health wait covers it
        }

        for (var attempt = 0; attempt < 20; attempt++)
        {
            var r = await Tools.RunAsync(_ip, ["netns", "exec", fromNs, ping, "-c", "1", "-W", "1", address]);
            if (r.ExitCode == 0)
            {
                return;
            }

            await Task.Delay(100);
        }

        throw new InvalidOperationException($"{fromNs} cannot reach {address} through the bridge");
    }

    private async Task IpAsync(params string[] args)
    {
        var r = await Tools.RunAsync(_ip, args);
        r.ExitCode.Should().Be(0, "ip must succeed:\n{0}", r);
    }
}
