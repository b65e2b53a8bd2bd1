using System.Buffers;
using System.IO.Pipelines;

namespace KvStore.Server.Hosting.Http2Authority;

/// <summary>The HTTP/2 client connection preface (RFC 9113 §3.4) and a peek at whether a connection starts with it.</summary>
internal static class Http2Preface
{
    public static ReadOnlySpan<byte> Bytes => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    /// <summary>Reads until the preface is matched or ruled out; examines without consuming, so the next reader sees the same bytes.</summary>
    public static async Task<bool> StartsWithAsync(PipeReader input, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var length = (int)Math.Min(buffer.Length, Bytes.Length);
            var matches = Matches(buffer.Slice(0, length));
            if (!matches || length == Bytes.Length || result.IsCompleted || result.IsCanceled)
            {
                input.AdvanceTo(buffer.Start, buffer.Start);
                return matches && length == Bytes.Length;
            }

            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static bool Matches(ReadOnlySequence<byte> head)
    {
        Span<byte> bytes = stackalloc byte[Bytes.Length];
        head.CopyTo(bytes);
        return bytes[..(int)head.Length].SequenceEqual(Bytes[..(int)head.Length]);
    }
}
