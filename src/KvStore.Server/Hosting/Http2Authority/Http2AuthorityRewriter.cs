using System.Buffers;
using System.Buffers.Binary;

namespace KvStore.Server.Hosting.Http2Authority;

/// <summary>
/// The client→server half of an HTTP/2 connection, frame by frame: rewrites a URL-shaped <c>:authority</c>
/// ("http://127.0.0.1:2379", which etcdctl 3.4 sends when given an endpoint URL and etcd accepts) to its host[:port],
/// because Kestrel resets such a stream as an invalid host before any application code runs.
/// Every header block is HPACK-decoded so the peer encoder's dynamic table is mirrored. Until a block needs a rewrite,
/// frames are forwarded byte for byte (Kestrel's decoder then holds the same table). From the first rewritten block on,
/// every block is re-encoded as literals without indexing (never-indexed kept), so Kestrel's decoder never needs the
/// entries the client referenced; re-encoded blocks go out as HEADERS + CONTINUATION frames of at most 16384 bytes
/// payload (the smallest SETTINGS_MAX_FRAME_SIZE), with END_STREAM and priority kept and padding dropped.
/// Other frames pass through untouched, streamed without waiting for their whole payload. Input that is not HTTP/2
/// as expected (bad preface, malformed HPACK or framing) is forwarded untouched from then on for Kestrel to reject,
/// unless a rewrite already happened, in which case the connection is failed.
/// </summary>
internal sealed class Http2AuthorityRewriter : IDisposable
{
    public const int MaxOutputFramePayload = 16384;
    private const int FrameHeaderLength = 9;
    private const byte TypeHeaders = 0x1;
    private const byte TypeContinuation = 0x9;
    private const byte FlagEndStream = 0x1;
    private const byte FlagEndHeaders = 0x4;
    private const byte FlagPadded = 0x8;
    private const byte FlagPriority = 0x20;
    private const int MaxBlockBytes = 4 * 1024 * 1024;

    private static ReadOnlySpan<byte> Preface => Http2Preface.Bytes;

    private readonly HpackDecoder _decoder;
    private readonly byte[] _priority = new byte[5];
    private int _prefaceMatched;
    private long _passthroughRemaining;
    private bool _raw;
    private bool _diverged;

    private bool _inBlock;
    private uint _blockStream;
    private bool _endStream;
    private bool _hasPriority;
    private byte[] _rawFrames = ArrayPool<byte>.Shared.Rent(4096);
    private int _rawLength;
    private byte[] _fragment = ArrayPool<byte>.Shared.Rent(4096);
    private int _fragmentLength;
    private byte[] _encoded = ArrayPool<byte>.Shared.Rent(4096);

    public Http2AuthorityRewriter(int headerTableSize = 4096)
    {
        _decoder = new HpackDecoder(headerTableSize);
    }

    /// <summary>True once a block was re-encoded (the two HPACK contexts differ from then on).</summary>
    public bool Rewrote => _diverged;

    /// <summary>
    /// Forwards or rewrites what <paramref name="input"/> holds to <paramref name="output"/>; returns how far the input
    /// was consumed (the rest is an incomplete frame header or header-block frame: call again with more bytes).
    /// </summary>
    public SequencePosition Process(ReadOnlySequence<byte> input, IBufferWriter<byte> output)
    {
        Span<byte> header = stackalloc byte[FrameHeaderLength];
        Span<byte> prefaceBytes = stackalloc byte[24];
        while (!input.IsEmpty)
        {
            if (_raw)
            {
                Write(output, input);
                return input.End;
            }

            if (_prefaceMatched < Preface.Length)
            {
                var n = (int)Math.Min(input.Length, Preface.Length - _prefaceMatched);
                var chunk = input.Slice(0, n);
                chunk.CopyTo(prefaceBytes);
                if (!prefaceBytes[..n].SequenceEqual(Preface.Slice(_prefaceMatched, n)))
                {
                    _raw = true;
                    continue;
                }

                Write(output, chunk);
                _prefaceMatched += n;
                input = input.Slice(n);
                continue;
            }

            if (_passthroughRemaining > 0)
            {
                var n = Math.Min(input.Length, _passthroughRemaining);
                Write(output, input.Slice(0, n));
                _passthroughRemaining -= n;
                input = input.Slice(n);
                continue;
            }

            if (input.Length < FrameHeaderLength)
            {
                break;
            }

            input.Slice(0, FrameHeaderLength).CopyTo(header);
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            var type = header[3];
            var flags = header[4];
            var stream = BinaryPrimitives.ReadUInt32BigEndian(header[5..]) & 0x7FFFFFFF;

            var isBlockFrame = type == TypeHeaders || (type == TypeContinuation && _inBlock && stream == _blockStream);
            if (_inBlock && !isBlockFrame)
            {
                // RFC 9113 §6.10: only CONTINUATION of the same stream may follow; Kestrel will fail the connection.
                GiveUp(output);
                continue;
            }

            if (!isBlockFrame)
            {
                Write(output, input.Slice(0, FrameHeaderLength));
                _passthroughRemaining = length;
                input = input.Slice(FrameHeaderLength);
                continue;
            }

            if (_rawLength + FrameHeaderLength + length > MaxBlockBytes)
            {
                GiveUp(output);
                continue;
            }

            if (input.Length < FrameHeaderLength + length)
            {
                break;
            }

            var frameStart = _rawLength;
            Append(ref _rawFrames, ref _rawLength, input.Slice(0, FrameHeaderLength + length));
            input = input.Slice(FrameHeaderLength + length);
            if (!AddFragment(type, flags, stream, frameStart + FrameHeaderLength, length))
            {
                GiveUp(output);
                continue;
            }

            if ((flags & FlagEndHeaders) != 0)
            {
                FinishBlock(output);
            }
        }

        return input.Start;
    }

    public void Dispose()
    {
        ArrayPool<byte>.Shared.Return(_rawFrames);
        ArrayPool<byte>.Shared.Return(_fragment);
        ArrayPool<byte>.Shared.Return(_encoded);
        _rawFrames = _fragment = _encoded = [];
    }

    /// <summary>The host[:port] of a URL-shaped authority ("http://h:p/x" → "h:p"); null when it is not one.</summary>
    internal static ArraySegment<byte>? RewriteAuthority(ArraySegment<byte> value)
    {
        var span = value.AsSpan();
        var scheme = span.IndexOf("://"u8);
        if (scheme <= 0)
        {
            return null;
        }

        var start = scheme + 3;
        var end = span[start..].IndexOfAny("/?#"u8);
        var hostLength = end < 0 ? span.Length - start : end;
        return value.Slice(start, hostLength);
    }

    private bool AddFragment(byte type, byte flags, uint stream, int payloadStart, int length)
    {
        var offset = 0;
        var padding = 0;
        if (type == TypeHeaders)
        {
            _inBlock = true;
            _blockStream = stream;
            _endStream = (flags & FlagEndStream) != 0;
            _hasPriority = (flags & FlagPriority) != 0;
            if ((flags & FlagPadded) != 0)
            {
                if (length < 1)
                {
                    return false;
                }

                padding = _rawFrames[payloadStart];
                offset = 1;
            }

            if (_hasPriority)
            {
                if (length < offset + 5)
                {
                    return false;
                }

                _rawFrames.AsSpan(payloadStart + offset, 5).CopyTo(_priority);
                offset += 5;
            }

            if (offset + padding > length)
            {
                return false;
            }
        }

        Append(ref _fragment, ref _fragmentLength, _rawFrames.AsSpan(payloadStart + offset, length - offset - padding));
        return true;
    }

    private void FinishBlock(IBufferWriter<byte> output)
    {
        IReadOnlyList<HpackField> fields;
        try
        {
            fields = _decoder.Decode(_fragment, _fragmentLength);
        }
        catch (HpackDecodingException)
        {
            GiveUp(output);
            return;
        }

        var rewrite = _diverged;
        for (var i = 0; i < fields.Count && !rewrite; i++)
        {
            rewrite = IsAuthority(fields[i].Name) && RewriteAuthority(fields[i].Value) is not null;
        }

        if (!rewrite)
        {
            output.Write(_rawFrames.AsSpan(0, _rawLength));
        }
        else
        {
            _diverged = true;
            WriteReencoded(output, fields);
        }

        _inBlock = false;
        _rawLength = 0;
        _fragmentLength = 0;
    }

    private void WriteReencoded(IBufferWriter<byte> output, IReadOnlyList<HpackField> fields)
    {
        var needed = 0;
        for (var i = 0; i < fields.Count; i++)
        {
            needed += fields[i].Name.Count + fields[i].Value.Count + 11;
        }

        if (_encoded.Length < needed)
        {
            ArrayPool<byte>.Shared.Return(_encoded);
            _encoded = ArrayPool<byte>.Shared.Rent(needed);
        }

        var pos = 0;
        for (var i = 0; i < fields.Count; i++)
        {
            var field = fields[i];
            var value = field.Value;
            if (IsAuthority(field.Name) && RewriteAuthority(value) is { } host)
            {
                value = host;
            }

            // Literal without indexing (0000) or never indexed (0001), new name (index 0), raw strings.
            _encoded[pos++] = field.Kind == HpackFieldKind.NeverIndexed ? (byte)0x10 : (byte)0x00;
            pos = WriteString(_encoded, pos, field.Name);
            pos = WriteString(_encoded, pos, value);
        }

        Span<byte> header = stackalloc byte[FrameHeaderLength];
        var prefix = _hasPriority ? 5 : 0;
        var sent = 0;
        var first = true;
        do
        {
            var room = MaxOutputFramePayload - (first ? prefix : 0);
            var chunk = Math.Min(room, pos - sent);
            var last = sent + chunk == pos;
            byte flags = last ? FlagEndHeaders : (byte)0;
            if (first)
            {
                flags |= (byte)((_endStream ? FlagEndStream : 0) | (_hasPriority ? FlagPriority : 0));
            }

            var payload = chunk + (first ? prefix : 0);
            header[0] = (byte)(payload >> 16);
            header[1] = (byte)(payload >> 8);
            header[2] = (byte)payload;
            header[3] = first ? TypeHeaders : TypeContinuation;
            header[4] = flags;
            BinaryPrimitives.WriteUInt32BigEndian(header[5..], _blockStream);
            output.Write(header);
            if (first && _hasPriority)
            {
                output.Write(_priority);
            }

            output.Write(_encoded.AsSpan(sent, chunk));
            sent += chunk;
            first = false;
        }
        while (sent < pos);
    }

    private static int WriteString(byte[] buffer, int pos, ArraySegment<byte> value)
    {
        // Prefixed integer (RFC 7541 §5.1), 7-bit prefix, H = 0.
        var length = value.Count;
        if (length < 0x7F)
        {
            buffer[pos++] = (byte)length;
        }
        else
        {
            buffer[pos++] = 0x7F;
            length -= 0x7F;
            while (length >= 0x80)
            {
                buffer[pos++] = (byte)((length & 0x7F) | 0x80);
                length >>= 7;
            }

            buffer[pos++] = (byte)length;
        }

        value.AsSpan().CopyTo(buffer.AsSpan(pos));
        return pos + value.Count;
    }

    private static bool IsAuthority(ArraySegment<byte> name) => name.AsSpan().SequenceEqual(":authority"u8);

    private void GiveUp(IBufferWriter<byte> output)
    {
        if (_diverged)
        {
            throw new InvalidDataException("malformed HTTP/2 header block after an :authority rewrite");
        }

        output.Write(_rawFrames.AsSpan(0, _rawLength));
        _rawLength = 0;
        _fragmentLength = 0;
        _inBlock = false;
        _raw = true;
    }

    private static void Write(IBufferWriter<byte> output, ReadOnlySequence<byte> data)
    {
        foreach (var segment in data)
        {
            output.Write(segment.Span);
        }
    }

    private static void Append(ref byte[] buffer, ref int length, ReadOnlySequence<byte> data)
    {
        Ensure(ref buffer, length + (int)data.Length);
        data.CopyTo(buffer.AsSpan(length));
        length += (int)data.Length;
    }

    private static void Append(ref byte[] buffer, ref int length, ReadOnlySpan<byte> data)
    {
        Ensure(ref buffer, length + data.Length);
        data.CopyTo(buffer.AsSpan(length));
        length += data.Length;
    }

    private static void Ensure(ref byte[] buffer, int size)
    {
        if (buffer.Length >= size)
        {
            return;
        }

        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(size, buffer.Length * 2));
        buffer.AsSpan().CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(buffer);
        buffer = bigger;
    }
}
