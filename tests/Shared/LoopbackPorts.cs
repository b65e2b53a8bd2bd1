using System.Net;
using System.Net.Sockets;

namespace KvStore.Testing;

/// <summary>
/// Hands out free loopback ports, never the same one twice in a process, and never one the kernel may pick as the
/// local port of an outgoing connection. Ports from the kernel (port 0) come from the ephemeral range, where any
/// other test's client connection could take the port between the hand-out and the server's bind ("address already
/// in use"); and asking for port 0 twice can return the same port, which gave two members one peer URL. So each test
/// process claims a slice of ports below the ephemeral range for its lifetime (an exclusive lock on a file per
/// slice, so test projects running side by side never share one) and hands out ports of its slice that nothing has
/// bound.
/// </summary>
internal static class LoopbackPorts
{
    private const int RangeStart = 15_000;
    private const int SliceSize = 2_000;
    private const int Slices = 8; // 15,000..30,999: below Linux's default ephemeral range (32,768..60,999)

    private static readonly HashSet<int> Given = [];
    private static readonly (int Start, FileStream Lock) Slice = ClaimSlice();
    private static int _next;

    public static int[] Take(int count)
    {
        lock (Given)
        {
            var held = new List<TcpListener>();
            try
            {
                var ports = new List<int>(count);
                for (var tried = 0; ports.Count < count; tried++)
                {
                    if (tried == SliceSize)
                    {
                        throw new InvalidOperationException($"no free loopback port left in {Slice.Start}..{Slice.Start + SliceSize - 1}");
                    }

                    var port = Slice.Start + (_next++ % SliceSize);
                    if (Given.Contains(port) || TryHold(port) is not { } listener)
                    {
                        continue;
                    }

                    held.Add(listener);
                    Given.Add(port);
                    ports.Add(port);
                }

                return [.. ports];
            }
            finally
            {
                foreach (var listener in held)
                {
                    listener.Dispose();
                }
            }
        }
    }

    public static int TakeOne() => Take(1)[0];

    private static TcpListener? TryHold(int port)
    {
        var listener = new TcpListener(IPAddress.Loopback, port);
        try
        {
            listener.Start();
            return listener;
        }
        catch (SocketException)
        {
            listener.Dispose();
            return null; // bound by someone else
        }
    }

    /// <summary>The first slice whose lock file this process can lock; held until the process ends.</summary>
    private static (int, FileStream) ClaimSlice()
    {
        var dir = Path.Combine(Path.GetTempPath(), "kvstore-test-ports");
        Directory.CreateDirectory(dir);
        var first = Environment.ProcessId % Slices;
        for (var i = 0; i < Slices; i++)
        {
            var slice = (first + i) % Slices;
            try
            {
                // FileShare.None takes an exclusive advisory lock (flock): one live process per slice.
                var lockFile = new FileStream(Path.Combine(dir, $"slice-{slice}"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                return (RangeStart + (slice * SliceSize), lockFile);
            }
            catch (IOException)
            {
                // Another test process has this slice.
            }
        }

        throw new InvalidOperationException($"all {Slices} loopback port slices under {dir} are taken by other test processes");
    }
}
