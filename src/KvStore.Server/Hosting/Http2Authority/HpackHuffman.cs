namespace KvStore.Server.Hosting.Http2Authority;

/// <summary>
/// HPACK's static Huffman code (RFC 7541 Appendix B). The code is canonical (codes of one length are consecutive
/// and ordered by symbol), so the code lengths alone define it; decoding walks one bit at a time and compares
/// against the first code of each length, as a canonical decoder does. Symbol 256 is EOS.
/// </summary>
internal static class HpackHuffman
{
    private const int MaxLength = 30;
    private const int Eos = 256;

    // RFC 7541 Appendix B, the "len in bits" column, symbols 0..256.
    private static ReadOnlySpan<byte> Lengths =>
    [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ];

    // For each length: the first code of that length, how many codes have it, and where its symbols start in Sorted.
    private static readonly uint[] FirstCode = new uint[MaxLength + 1];
    private static readonly int[] Count = new int[MaxLength + 1];
    private static readonly int[] Offset = new int[MaxLength + 1];
    private static readonly ushort[] Sorted = new ushort[257];
    private static readonly uint[] Codes = new uint[257];

    static HpackHuffman()
    {
        var lengths = Lengths;
        for (var s = 0; s < lengths.Length; s++)
        {
            Count[lengths[s]]++;
        }

        uint code = 0;
        var offset = 0;
        for (var len = 1; len <= MaxLength; len++)
        {
            FirstCode[len] = code;
            Offset[len] = offset;
            offset += Count[len];
            code = (code + (uint)Count[len]) << 1;
        }

        var next = new int[MaxLength + 1];
        for (var s = 0; s < lengths.Length; s++)
        {
            var len = lengths[s];
            var rank = next[len]++;
            Sorted[Offset[len] + rank] = (ushort)s;
            Codes[s] = FirstCode[len] + (uint)rank;
        }
    }

    /// <summary>The code for a symbol (for tests; the filter never Huffman-encodes).</summary>
    internal static (uint Code, int Length) CodeOf(int symbol) => (Codes[symbol], Lengths[symbol]);

    /// <summary>An upper bound on the decoded length of <paramref name="encodedLength"/> bytes (5 bits per symbol at best).</summary>
    public static int MaxDecodedLength(int encodedLength) => (int)(((long)encodedLength * 8 / 5) + 1);

    /// <summary>Decodes into <paramref name="destination"/>; returns the decoded length or -1 for a malformed string.</summary>
    public static int Decode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        var written = 0;
        uint code = 0;
        var len = 0;
        for (var i = 0; i < source.Length; i++)
        {
            int b = source[i];
            for (var bit = 7; bit >= 0; bit--)
            {
                code = (code << 1) | (uint)((b >> bit) & 1);
                len++;
                var index = code - FirstCode[len];
                if (index < (uint)Count[len])
                {
                    var symbol = Sorted[Offset[len] + (int)index];
                    if (symbol == Eos || written >= destination.Length)
                    {
                        return -1;
                    }

                    destination[written++] = (byte)symbol;
                    code = 0;
                    len = 0;
                }
                else if (len == MaxLength)
                {
                    return -1;
                }
            }
        }

        // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
        if (len > 7 || code != (1u << len) - 1)
        {
            return -1;
        }

        return written;
    }
}
