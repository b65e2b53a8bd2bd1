using System.Buffers;
using System.Runtime.CompilerServices;

namespace KvStore.Server.Peer;

/// <summary>
/// Where the bytes of an outgoing snapshot come from: memory, a <see cref="Stream"/> (read once, disposed by the transport
/// after the transfer) or an async sequence of buffers (each buffer is sent before the next is requested, so a producer
/// may reuse it). The transport re-cuts the data into chunks of <see cref="PeerTransportOptions.SnapshotChunkBytes"/>.
/// </summary>
public sealed class SnapshotSource : IAsyncDisposable
{
    private readonly Func<int, CancellationToken, IAsyncEnumerable<ReadOnlyMemory<byte>>> _read;
    private readonly IAsyncDisposable? _owned;

    private SnapshotSource(Func<int, CancellationToken, IAsyncEnumerable<ReadOnlyMemory<byte>>> read, long? length, IAsyncDisposable? owned)
    {
        _read = read;
        Length = length;
        _owned = owned;
    }

    /// <summary>Total size when known up front.</summary>
    public long? Length { get; }

    /// <summary>Data already in memory (sent without copying).</summary>
    public static SnapshotSource FromMemory(ReadOnlyMemory<byte> data) => new((chunk, _) => Slice(data, chunk), data.Length, null);

    /// <summary>Data read from <paramref name="stream"/>, which the source owns and disposes.</summary>
    public static SnapshotSource FromStream(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return new((chunk, token) => ReadStream(stream, chunk, token), stream.CanSeek ? stream.Length - stream.Position : null, stream);
    }

    /// <summary>Data produced by <paramref name="chunks"/>.</summary>
    /// <param name="chunks">Buffers in order; any sizes.</param>
    /// <param name="length">Total size if known.</param>
    public static SnapshotSource FromChunks(IAsyncEnumerable<ReadOnlyMemory<byte>> chunks, long? length = null)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        return new((chunk, token) => Recut(chunks, chunk, token), length, null);
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync() => _owned?.DisposeAsync() ?? ValueTask.CompletedTask;

    /// <summary>The data in pieces of at most <paramref name="chunkBytes"/>; a piece is valid until the next is requested.</summary>
    internal IAsyncEnumerable<ReadOnlyMemory<byte>> ReadAsync(int chunkBytes, CancellationToken cancellationToken) => _read(chunkBytes, cancellationToken);

    private static async IAsyncEnumerable<ReadOnlyMemory<byte>> Slice(ReadOnlyMemory<byte> data, int chunkBytes)
    {
        for (var offset = 0; offset < data.Length; offset += chunkBytes)
        {
            yield return data.Slice(offset, Math.Min(chunkBytes, data.Length - offset));
        }

        await Task.CompletedTask;
    }

    private static async IAsyncEnumerable<ReadOnlyMemory<byte>> ReadStream(Stream stream, int chunkBytes, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(chunkBytes);
        try
        {
            while (true)
            {
                // Fill the chunk completely (short reads are common on pipes and network streams).
                var filled = 0;
                while (filled < chunkBytes)
                {
                    var read = await stream.ReadAsync(buffer.AsMemory(filled, chunkBytes - filled), cancellationToken);
                    if (read == 0)
                    {
                        break;
                    }

                    filled += read;
                }

                if (filled > 0)
                {
                    yield return buffer.AsMemory(0, filled);
                }

                if (filled < chunkBytes)
                {
                    yield break;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static async IAsyncEnumerable<ReadOnlyMemory<byte>> Recut(IAsyncEnumerable<ReadOnlyMemory<byte>> chunks, int chunkBytes, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var piece in chunks.WithCancellation(cancellationToken))
        {
            for (var offset = 0; offset < piece.Length; offset += chunkBytes)
            {
                yield return piece.Slice(offset, Math.Min(chunkBytes, piece.Length - offset));
            }
        }
    }
}
