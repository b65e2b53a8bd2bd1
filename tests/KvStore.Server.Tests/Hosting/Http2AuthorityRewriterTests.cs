using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using KvStore.Server.Hosting.Http2Authority;
using static KvStore.Testing.Http2Frames;

namespace KvStore.Server.Tests.Hosting;

/// <summary>HPACK decoding (RFC 7541 Appendix C) and the HTTP/2 :authority rewrite the client ports apply.</summary>
public sealed class Http2AuthorityRewriterTests
{
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    [Fact]
    public void C3_requests_without_huffman()
    {
        var d = new HpackDecoder();
        Fields(d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")
            .Should().Equal((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"));
        d.DynamicTableSize.Should().Be(57);
        Fields(d, "8286 84be 5808 6e6f 2d63 6163 6865")
            .Should().Equal((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"), ("cache-control", "no-cache"));
        d.DynamicTableSize.Should().Be(110);
        Fields(d, "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")
            .Should().Equal((":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"), ("custom-key", "custom-value"));
        d.DynamicTableSize.Should().Be(164);
        d.DynamicTable().Should().Equal(("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com"));
    }

    [Fact]
    public void C4_requests_with_huffman()
    {
        var d = new HpackDecoder();
        Fields(d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")
            .Should().Equal((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"));
        Fields(d, "8286 84be 5886 a8eb 1064 9cbf")
            .Should().Equal((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"), ("cache-control", "no-cache"));
        Fields(d, "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")
            .Should().Equal((":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"), ("custom-key", "custom-value"));
        d.DynamicTableSize.Should().Be(164);
        d.DynamicTable().Should().Equal(("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com"));
    }

    [Fact]
    public void C5_responses_evict_from_a_256_octet_table()
    {
        var d = Decoder256();
        Fields(d, "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")
            .Should().Equal((":status", "302"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com"));
        d.DynamicTableSize.Should().Be(222);
        Fields(d, "4803 3330 37c1 c0bf")
            .Should().Equal((":status", "307"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com"));
        d.DynamicTableSize.Should().Be(222);
        d.DynamicTable().Should().Equal((":status", "307"), ("location", "https://www.example.com"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("cache-control", "private"));
    }

    [Fact]
    public void C6_responses_with_huffman_evict_from_a_256_octet_table()
    {
        var d = Decoder256();
        Fields(d, "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3")
            .Should().Equal((":status", "302"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com"));
        d.DynamicTableSize.Should().Be(222);
        Fields(d, "4883 640e ffc1 c0bf")
            .Should().Equal((":status", "307"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com"));
        Fields(d, "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07")
            .Should().Equal(
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"));
        d.DynamicTableSize.Should().Be(215);
        d.DynamicTable().Should().Equal(
            ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
            ("content-encoding", "gzip"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"));
    }

    [Fact]
    public void Huffman_round_trips_every_byte_and_rejects_bad_padding()
    {
        var all = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var encoded = HuffmanEncode(all);
        var decoded = new byte[all.Length];
        HpackHuffman.Decode(encoded, decoded).Should().Be(256);
        decoded.Should().Equal(all);

        HpackHuffman.Decode([0x00], new byte[8]).Should().Be(-1, "padding must be ones");
        HpackHuffman.Decode([0xFF, 0xFF, 0xFF, 0xFF], new byte[8]).Should().Be(-1, "EOS must not be decoded");
    }

    [Fact]
    public void Decoder_rejects_bad_indexes_and_late_size_updates()
    {
        new Action(() => Fields(new HpackDecoder(), "80")).Should().Throw<HpackDecodingException>();
        new Action(() => Fields(new HpackDecoder(), "be")).Should().Throw<HpackDecodingException>();
        new Action(() => Fields(new HpackDecoder(), "8220")).Should().Throw<HpackDecodingException>();
        new Action(() => Fields(new HpackDecoder(), "3fe21f")).Should().Throw<HpackDecodingException>("above 4096");
    }

    [Theory]
    [InlineData("http://127.0.0.1:2379", "127.0.0.1:2379")]
    [InlineData("https://example.com:2379/", "example.com:2379")]
    [InlineData("http://[::1]:2379/x?y", "[::1]:2379")]
    [InlineData("127.0.0.1:2379", null)]
    [InlineData("localhost", null)]
    public void Authority_rewrite(string value, string? expected)
    {
        var result = Http2AuthorityRewriter.RewriteAuthority(Encoding.ASCII.GetBytes(value));
        (result is { } r ? Encoding.ASCII.GetString(r) : null).Should().Be(expected);
    }

    [Fact]
    public void Blocks_without_a_url_authority_pass_through_byte_for_byte()
    {
        var encoder = new TestEncoder();
        var input = Concat(
            Preface,
            Frame(0x4, 0, 0, new byte[6]),
            Frame(0x1, 0x4, 1, encoder.Encode((":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Put"), (":authority", "127.0.0.1:2379"), ("content-type", "application/grpc"))),
            Frame(0x0, 0x1, 1, new byte[10]),
            Frame(0x1, 0x5, 3, encoder.Encode((":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Put"), (":authority", "127.0.0.1:2379"), ("content-type", "application/grpc"))));

        var (output, rewriter) = Run(input, chunk: 7);
        output.Should().Equal(input);
        rewriter.Rewrote.Should().BeFalse();
    }

    [Fact]
    public void Url_authority_is_rewritten_and_later_blocks_are_reencoded_consistently()
    {
        var encoder = new TestEncoder();
        var headers1 = new[] { (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.Maintenance/Status"), (":authority", "http://127.0.0.1:2379"), ("content-type", "application/grpc"), ("te", "trailers") };
        var headers2 = new[] { (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Range"), (":authority", "http://127.0.0.1:2379"), ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S") };
        var big = new string('x', 20000);
        var headers3 = new[] { (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Range"), (":authority", "http://127.0.0.1:2379"), ("x-big", big) };
        var block1 = encoder.Encode(headers1);
        var block2 = encoder.Encode(headers2);
        var block3 = encoder.Encode(headers3);
        var priorityPadded = Concat([3], [0x80, 0, 0, 1, 15], block2.AsSpan(0, 10).ToArray(), [0, 0, 0]);
        var input = Concat(
            Preface,
            Frame(0x1, 0x4, 1, block1),
            Frame(0x0, 0x1, 1, [0, 0, 0, 0, 0]),
            Frame(0x1, 0x8 | 0x20 | 0x1, 3, priorityPadded),
            Frame(0x9, 0x4, 3, block2.AsSpan(10).ToArray()),
            Frame(0x8, 0, 0, [0, 0, 1, 0]),
            Frame(0x1, 0x5, 5, block3));

        var (output, rewriter) = Run(input, chunk: 5);
        rewriter.Rewrote.Should().BeTrue();

        // Decode what Kestrel would see with a fresh decoder: the rewritten values, no references to client entries.
        var frames = ParseFrames(output.AsSpan(Preface.Length).ToArray());
        var kestrel = new HpackDecoder();
        var blocks = new List<(uint Stream, byte Flags, byte[] Priority, (string, string)[] Fields)>();
        var others = new List<(byte Type, byte[] Payload)>();
        byte[]? pending = null;
        (uint, byte, byte[]) start = (0, 0, []);
        foreach (var (type, flags, stream, payload) in frames)
        {
            payload.Length.Should().BeLessThanOrEqualTo(16384);
            if (type == 0x1)
            {
                var prio = (flags & 0x20) != 0 ? payload[..5] : [];
                (flags & 0x8).Should().Be(0, "padding is dropped");
                start = (stream, flags, prio);
                pending = payload[prio.Length..];
            }
            else if (type == 0x9)
            {
                stream.Should().Be(start.Item1);
                pending = Concat(pending!, payload);
            }
            else
            {
                others.Add((type, payload));
                continue;
            }

            if ((flags & 0x4) != 0)
            {
                var block = pending!;
                var fields = kestrel.Decode(block, block.Length).Select(f => (Str(f.Name), Str(f.Value))).ToArray();
                blocks.Add((start.Item1, start.Item2, start.Item3, fields));
                kestrel.DynamicTableSize.Should().Be(0);
            }
        }

        static (string, string)[] Fixed((string Name, string Value)[] h) =>
            h.Select(x => x.Name == ":authority" ? (x.Name, "127.0.0.1:2379") : x).ToArray();

        blocks.Select(b => b.Stream).Should().Equal(1u, 3u, 5u);
        blocks[0].Fields.Should().Equal(Fixed(headers1));
        blocks[1].Fields.Should().Equal(Fixed(headers2));
        blocks[1].Flags.Should().Be(0x20 | 0x4 | 0x1, "END_STREAM and PRIORITY kept, one frame holds the re-encoded block");
        blocks[1].Priority.Should().Equal(0x80, 0, 0, 1, 15);
        blocks[2].Fields.Should().Equal(Fixed(headers3));
        frames.Count(f => f.Type == 0x9 && f.Stream == 5).Should().BeGreaterThan(0, "a 20 kB block is split");
        others.Select(o => o.Type).Should().Equal((byte)0x0, (byte)0x8);
        others[0].Payload.Should().Equal(0, 0, 0, 0, 0);
    }

    [Fact]
    public void Not_http2_is_forwarded_untouched()
    {
        var input = Encoding.ASCII.GetBytes("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        Run(input, chunk: 3).Output.Should().Equal(input);
    }

    private static HpackDecoder Decoder256()
    {
        var d = new HpackDecoder();
        Fields(d, "3fe101"); // size update to 256
        return d;
    }

    private static (string, string)[] Fields(HpackDecoder d, string hex)
    {
        var bytes = Convert.FromHexString(hex.Replace(" ", string.Empty, StringComparison.Ordinal));
        return d.Decode(bytes, bytes.Length).Select(f => (Str(f.Name), Str(f.Value))).ToArray();
    }

    private static string Str(ArraySegment<byte> b) => Encoding.Latin1.GetString(b);

    private static (byte[] Output, Http2AuthorityRewriter Rewriter) Run(byte[] input, int chunk)
    {
        var rewriter = new Http2AuthorityRewriter();
        var output = new ArrayBufferWriter<byte>();
        var pending = new List<byte>();
        for (var i = 0; i < input.Length; i += chunk)
        {
            pending.AddRange(input.AsSpan(i, Math.Min(chunk, input.Length - i)).ToArray());
            var seq = new ReadOnlySequence<byte>(pending.ToArray());
            var consumed = rewriter.Process(seq, output);
            var used = (int)seq.Slice(0, consumed).Length;
            pending.RemoveRange(0, used);
        }

        pending.Should().BeEmpty();
        return (output.WrittenSpan.ToArray(), rewriter);
    }

    private static List<(byte Type, byte Flags, uint Stream, byte[] Payload)> ParseFrames(byte[] data)
    {
        var list = new List<(byte, byte, uint, byte[])>();
        var pos = 0;
        while (pos < data.Length)
        {
            var len = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2];
            list.Add((data[pos + 3], data[pos + 4], BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos + 5)) & 0x7FFFFFFF, data.AsSpan(pos + 9, len).ToArray()));
            pos += 9 + len;
        }

        return list;
    }

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    private static byte[] HuffmanEncode(byte[] data)
    {
        var bits = new List<bool>();
        foreach (var b in data)
        {
            var (code, length) = HpackHuffman.CodeOf(b);
            for (var i = length - 1; i >= 0; i--)
            {
                bits.Add(((code >> i) & 1) != 0);
            }
        }

        while (bits.Count % 8 != 0)
        {
            bits.Add(true);
        }

        var result = new byte[bits.Count / 8];
        for (var i = 0; i < bits.Count; i++)
        {
            if (bits[i])
            {
                result[i / 8] |= (byte)(0x80 >> (i % 8));
            }
        }

        return result;
    }

    /// <summary>
    /// A client-like encoder (as grpc-go's): indexes every field with incremental indexing and reuses entries, Huffman
    /// for values, so decoding later blocks needs the mirrored dynamic table. Table size 4096, no eviction needed here.
    /// </summary>
    private sealed class TestEncoder
    {
        private readonly List<(string Name, string Value)> _table = [];

        public byte[] Encode(params (string Name, string Value)[] fields)
        {
            var output = new List<byte>();
            foreach (var (name, value) in fields)
            {
                var index = _table.IndexOf((name, value));
                if (index >= 0)
                {
                    WriteInt(output, 0x80, 7, 62 + index);
                    continue;
                }

                if (Encoding.ASCII.GetByteCount(name) + value.Length + 32 <= 1024)
                {
                    output.Add(0x40);
                    _table.Insert(0, (name, value));
                }
                else
                {
                    output.Add(0x00);
                }

                WriteString(output, name, huffman: false);
                WriteString(output, value, huffman: true);
            }

            return output.ToArray();
        }

        private static void WriteString(List<byte> output, string s, bool huffman)
        {
            var bytes = Encoding.ASCII.GetBytes(s);
            if (huffman)
            {
                bytes = HuffmanEncode(bytes);
            }

            WriteInt(output, huffman ? (byte)0x80 : (byte)0, 7, bytes.Length);
            output.AddRange(bytes);
        }

        private static void WriteInt(List<byte> output, byte flags, int prefix, int value)
        {
            var max = (1 << prefix) - 1;
            if (value < max)
            {
                output.Add((byte)(flags | value));
                return;
            }

            output.Add((byte)(flags | max));
            value -= max;
            while (value >= 0x80)
            {
                output.Add((byte)((value & 0x7F) | 0x80));
                value >>= 7;
            }

            output.Add((byte)value);
        }
    }
}
