namespace KvStore.Storage.Raft;

/// <summary>
/// Copies the payloads of retained raft entries into shared 1 MiB segments. The raft log keeps every entry since the
/// last snapshot (up to --snapshot-count of them, hundreds of MB with KiB-sized values); held as one small array each,
/// they survive into the GC's oldest generation and die there in bulk at each log compaction, which is what makes the
/// collector stop the process to compact that generation. Segments live on the large object heap, which is not
/// compacted: a segment is freed by the GC once no retained entry points into it, so an entry handed out earlier (to
/// a message in flight, to the apply loop) stays valid for as long as it is referenced. Not thread-safe.
/// </summary>
internal sealed class EntryPayloadArena
{
    /// <summary>Segment size: a large object (over the 85,000-byte threshold), small enough to waste little at its tail.</summary>
    internal const int SegmentBytes = 1 << 20;

    private byte[] _segment = [];
    private int _used;

    /// <summary>
    /// The payload, copied into the current segment; a payload that is empty, or too large to share a segment (it is
    /// a large object of its own already), is returned as it is.
    /// </summary>
    public ReadOnlyMemory<byte> Retain(ReadOnlyMemory<byte> payload)
    {
        if (payload.IsEmpty || payload.Length > SegmentBytes / 4)
        {
            return payload;
        }

        if (_segment.Length - _used < payload.Length)
        {
            _segment = GC.AllocateUninitializedArray<byte>(SegmentBytes);
            _used = 0;
        }

        var copy = _segment.AsMemory(_used, payload.Length);
        payload.Span.CopyTo(copy.Span);
        _used += payload.Length;
        return copy;
    }
}
