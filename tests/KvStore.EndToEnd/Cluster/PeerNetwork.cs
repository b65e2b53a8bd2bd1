using System.Collections.Concurrent;
using System.Globalization;
using Xunit.Abstractions;

namespace KvStore.EndToEnd.Cluster;

/// <summary>
/// A private network for the members of one cluster, made only of network namespaces this object creates:
/// a hub namespace holding a bridge, and one namespace per member (named kvs-test-&lt;random&gt;-m&lt;i&gt;) joined to
/// the bridge by a veth pair, with address 10.213.0.(i+1)/24 on its end (addresses exist only inside these
/// namespaces; the host's interfaces, routes and iptables are never touched). Each member keeps its client port on
/// 127.0.0.1 of its own namespace (clients reach it through `ip netns exec`) and its peer port on its 10.213 address.
/// <see cref="Isolate"/> drops, with iptables inside the namespaces, every packet between one member and the others
/// (the member's own INPUT from the bridge, and the others' INPUT from its address): a silent, two-way cut of its
/// peer traffic, as a real partition. Dispose deletes every namespace (the veth pairs and rules go with them); it
/// must run after the members are killed. Needs root, `ip` (iproute2) and `iptables`; the tests fail without them.
/// </summary>
public sealed class PeerNetwork : IDisposable
{
    private const string Subnet = "10.213.0.";

    // Namespaces still present when the test host exits (a test aborted mid-way) are deleted then.
    private static readonly ConcurrentDictionary<string, byte> Created = new();

    private readonly ITestOutputHelper _output;
    private readonly string _ip;
    private readonly string _iptables;
    private readonly List<string> _rules = [];
    private readonly string _prefix;
    private readonly int _size;

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
        _prefix = "kvs-test-" + Guid.NewGuid().ToString("N")[..8];
    }

    public string Hub => _prefix + "-hub";

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
                    $"the peer-partition test needs root (network namespaces and iptables); running as uid {id.Stdout.Trim()}. Run tests/run-all.sh as root.");
            }

            await net.AddNamespaceAsync(net.Hub);
            await net.IpAsync("-n", net.Hub, "link", "add", "br0", "type", "bridge");
            await net.IpAsync("-n", net.Hub, "link", "set", "br0", "up");
            for (var i = 0; i < size; i++)
            {
                var ns = net.Namespace(i);
                await net.AddNamespaceAsync(ns);
                var hubSide = "v" + i.ToString(CultureInfo.InvariantCulture);
                await net.IpAsync("-n", net.Hub, "link", "add", hubSide, "type", "veth", "peer", "name", "eth0", "netns", ns);
                await net.IpAsync("-n", net.Hub, "link", "set", hubSide, "master", "br0", "up");
                await net.IpAsync("-n", ns, "addr", "add", PeerNetwork.Address(i) + "/24", "dev", "eth0");
                await net.IpAsync("-n", ns, "link", "set", "eth0", "up");
                await net.IpAsync("-n", ns, "link", "set", "lo", "up");
            }

            // Every member namespace reaches every other through the bridge before a server starts.
            for (var i = 0; i < size; i++)
            {
                for (var j = 0; j < size; j++)
                {
                    if (i != j)
                    {
                        await net.WaitReachableAsync(i, j);
                    }
                }
            }

            output.WriteLine($"network {net._prefix}: hub {net.Hub}, members {string.Join(", ", Enumerable.Range(0, size).Select(i => $"{net.Namespace(i)}={PeerNetwork.Address(i)}"))}");
            return net;
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>Cuts member <paramref name="i"/> off from every other member, both ways (packets silently dropped).</summary>
    public async Task IsolateAsync(int i)
    {
        await AddRuleAsync(Namespace(i), ["INPUT", "-i", "eth0", "-j", "DROP"]);
        for (var j = 0; j < _size; j++)
        {
            if (j != i)
            {
                await AddRuleAsync(Namespace(j), ["INPUT", "-s", Address(i), "-j", "DROP"]);
            }
        }
    }

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
        for (var i = 0; i < _size; i++)
        {
            DeleteNamespace(Namespace(i));
        }

        DeleteNamespace(Hub);
    }

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

    private async Task WaitReachableAsync(int from, int to)
    {
        var ping = Tools.Find("ping");
        if (ping is null)
        {
            return; // the servers' own health wait covers it
        }

        for (var attempt = 0; attempt < 20; attempt++)
        {
            var r = await Tools.RunAsync(_ip, ["netns", "exec", Namespace(from), ping, "-c", "1", "-W", "1", Address(to)]);
            if (r.ExitCode == 0)
            {
                return;
            }

            await Task.Delay(100);
        }

        throw new InvalidOperationException($"{Namespace(from)} cannot reach {Address(to)} through the bridge");
    }

    private async Task IpAsync(params string[] args)
    {
        var r = await Tools.RunAsync(_ip, args);
        r.ExitCode.Should().Be(0, "ip must succeed:\n{0}", r);
    }
}
