using System.Net;
using System.Net.Sockets;

namespace KvStore.Testing;

/// <summary>
/// Hands out free loopback ports, never the same one twice in a process. Asking the OS for port 0 and
/// releasing it can return the same port on the next ask, which gave two members one peer URL (and so
/// one member id); the ports of one call are held open together and every port given out is remembered.
/// </summary>
internal static class LoopbackPorts
{
    private static readonly HashSet<int> Given = [];

    public static int[] Take(int count)
    {
        lock (Given)
        {
            var held = new List<TcpListener>();
            try
            {
                var ports = new List<int>(count);
                while (ports.Count < count)
                {
                    var listener = new TcpListener(IPAddress.Loopback, 0);
                    listener.Start();
                    held.Add(listener);
                    var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                    if (Given.Add(port))
                    {
                        ports.Add(port);
                    }
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
}
