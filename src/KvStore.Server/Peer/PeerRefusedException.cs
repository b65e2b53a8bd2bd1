namespace KvStore.Server.Peer;

/// <summary>The member at a peer URL is not the one this member means to reach (another cluster or another member).</summary>
public sealed class PeerRefusedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public PeerRefusedException()
    {
    }

    /// <summary>Creates the exception with a message naming both sides.</summary>
    public PeerRefusedException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a cause.</summary>
    public PeerRefusedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
