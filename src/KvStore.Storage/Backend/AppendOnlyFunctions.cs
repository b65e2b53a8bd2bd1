using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// FasterKV callbacks that never change a stored record's shape in place: an upsert overwrites in place only a value
/// of the same length (otherwise FasterKV appends a new record), and a delete always appends a tombstone. So in the
/// log a run of zeros only ends a page, and a tombstone never carries a value: rules <see cref="DataLogCheck"/> relies
/// on to tell damage from data (shrinking in place leaves zeros behind a record; deleting in place keeps its value).
/// </summary>
internal sealed class AppendOnlyFunctions : SpanByteFunctions<Empty>
{
    public override bool ConcurrentWriter(
        ref SpanByte key, ref SpanByte input, ref SpanByte src, ref SpanByte dst, ref SpanByteAndMemory output, ref UpsertInfo upsertInfo)
    {
        if (dst.Length != src.Length)
        {
            return false;
        }

        src.CopyTo(ref dst);
        return true;
    }

    public override bool ConcurrentDeleter(ref SpanByte key, ref SpanByte value, ref DeleteInfo deleteInfo) => false;
}
