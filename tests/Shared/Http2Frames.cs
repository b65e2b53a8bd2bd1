using System.Buffers.Binary;

namespace KvStore.Testing;

/// <summary>Raw HTTP/2 frames (RFC 9113 §4.1) for tests that speak the protocol byte by byte.</summary>
public static class Http2Frames
{
    /// <summary>A frame: 24-bit payload length, type, flags, 31-bit stream id, payload.</summary>
    public static byte[] Frame(byte type, byte flags, uint stream, byte[] payload)
    {
        var frame = new byte[9 + payload.Length];
        frame[0] = (byte)(payload.Length >> 16);
        frame[1] = (byte)(payload.Length >> 8);
        frame[2] = (byte)payload.Length;
        frame[3] = type;
        frame[4] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(5), stream);
        payload.CopyTo(frame, 9);
        return frame;
    }
}
