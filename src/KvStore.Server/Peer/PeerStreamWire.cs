using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace KvStore.Server.Peer;

/// <summary>
/// The framed peer stream: Raft messages on a connection of their own, without HTTP/2. The peer listener tells it
/// apart from HTTP/2 (and from TLS) by its first byte.
/// <code>
/// caller:   preface "KVRAFT1\n" | cluster id | from member id | to member id          (8 + 3 x 8 bytes, big-endian)
/// listener: preface "KVRAFT1\n" | status (0 accepted, 1 refused) | cluster id | member id | reason length (u16) | reason (UTF-8)
/// caller:   frames: length (u32) | RaftEnvelope; a frame of length 0 is a ping
/// listener: one byte <see cref="Pong"/> per ping, nothing else
/// </code>
/// A listener that does not know the preface (an HTTP/2-only member of an earlier version) answers something else;
/// the caller then uses the gRPC stream.
/// </summary>
internal static class PeerStreamWire
{
    /// <summary>Bytes of the length prefix of a frame.</summary>
    public const int LengthBytes = 4;

    /// <summary>The listener's answer to a ping.</summary>
    public const byte Pong = (byte)'P';

    /// <summary>Size of the caller's hello (preface and three IDs).</summary>
    public const int HelloBytes = 8 + (3 * 8);

    /// <summary>Size of the listener's answer without its reason text.</summary>
    public const int AnswerHeaderBytes = 8 + 1 + (2 * 8) + 2;

    /// <summary>Longest refusal reason sent (in UTF-8 bytes).</summary>
    private const int MaxReasonBytes = 1024;

    /// <summary>The preface both sides open with.</summary>
    public static ReadOnlySpan<byte> Preface => "KVRAFT1\n"u8;

    public static byte[] Hello(ulong clusterId, ulong from, ulong to)
    {
        var hello = new byte[HelloBytes];
        Preface.CopyTo(hello);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(8), clusterId);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(16), from);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(24), to);
        return hello;
    }

    /// <summary>Reads a hello's IDs; the preface must already have been checked.</summary>
    public static (ulong ClusterId, ulong From, ulong To) ReadHello(ReadOnlySequence<byte> hello)
    {
        Span<byte> bytes = stackalloc byte[HelloBytes];
        hello.Slice(0, HelloBytes).CopyTo(bytes);
        return (BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]), BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]), BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]));
    }

    /// <summary>The listener's answer: accepted (<paramref name="refusal"/> null) or refused with the reason.</summary>
    public static byte[] Answer(ulong clusterId, ulong memberId, string? refusal)
    {
        var reason = refusal is null ? [] : Encoding.UTF8.GetBytes(refusal);
        if (reason.Length > MaxReasonBytes)
        {
            Array.Resize(ref reason, MaxReasonBytes);
        }

        var answer = new byte[AnswerHeaderBytes + reason.Length];
        Preface.CopyTo(answer);
        answer[8] = refusal is null ? (byte)0 : (byte)1;
        BinaryPrimitives.WriteUInt64BigEndian(answer.AsSpan(9), clusterId);
        BinaryPrimitives.WriteUInt64BigEndian(answer.AsSpan(17), memberId);
        BinaryPrimitives.WriteUInt16BigEndian(answer.AsSpan(25), (ushort)reason.Length);
        reason.CopyTo(answer, AnswerHeaderBytes);
        return answer;
    }

    /// <summary>True when <paramref name="received"/> (at least the preface's length) starts with the preface.</summary>
    public static bool StartsWithPreface(ReadOnlySequence<byte> received)
    {
        Span<byte> first = stackalloc byte[Preface.Length];
        received.Slice(0, first.Length).CopyTo(first);
        return first.SequenceEqual(Preface);
    }

    /// <summary>The length prefix at the start of <paramref name="received"/> (at least <see cref="LengthBytes"/> long).</summary>
    public static uint ReadLength(ReadOnlySequence<byte> received)
    {
        Span<byte> prefix = stackalloc byte[LengthBytes];
        received.Slice(0, LengthBytes).CopyTo(prefix);
        return BinaryPrimitives.ReadUInt32BigEndian(prefix);
    }
}
