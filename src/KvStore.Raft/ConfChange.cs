using System.Buffers.Binary;

namespace KvStore.Raft;

/// <summary>Kinds of single-step membership change.</summary>
public enum ConfChangeType
{
    /// <summary>Add a voter, or promote an existing learner to voter.</summary>
    AddNode = 0,

    /// <summary>Remove a voter or learner.</summary>
    RemoveNode = 1,

    /// <summary>Add a learner (a voter cannot be demoted this way).</summary>
    AddLearnerNode = 2,
}

/// <summary>A single-step membership change, carried in an entry of type <see cref="EntryType.ConfChange"/>.</summary>
public sealed class ConfChange
{
    private const int HeaderSize = 9;

    /// <summary>What to do.</summary>
    public ConfChangeType Type { get; init; }

    /// <summary>The member concerned.</summary>
    public ulong NodeId { get; init; }

    /// <summary>Application data (e.g. the member's peer URLs).</summary>
    public ReadOnlyMemory<byte> Context { get; init; }

    /// <summary>Encodes the change as entry data: type (1 byte), node id (8 bytes, big endian), context.</summary>
    public byte[] Encode()
    {
        var buffer = new byte[HeaderSize + Context.Length];
        buffer[0] = (byte)Type;
        BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(1), NodeId);
        Context.Span.CopyTo(buffer.AsSpan(HeaderSize));
        return buffer;
    }

    /// <summary>Decodes data written by <see cref="Encode"/>.</summary>
    /// <exception cref="FormatException">The data is not an encoded change.</exception>
    public static ConfChange Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length < HeaderSize || data[0] > (byte)ConfChangeType.AddLearnerNode)
        {
            throw new FormatException("raft: malformed conf change entry");
        }

        return new ConfChange
        {
            Type = (ConfChangeType)data[0],
            NodeId = BinaryPrimitives.ReadUInt64BigEndian(data[1..]),
            Context = data[HeaderSize..].ToArray(),
        };
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Type}({NodeId})";
}
