using KvStore.Storage.Mvcc;

namespace KvStore.Server.Apply;

/// <summary>
/// Receives every committed change, on the apply thread, in commit order (implemented by the watch hub).
/// Must not block: slow watchers are queued and caught up from the store, never by stalling apply.
/// </summary>
public interface IWatchEventSink
{
    /// <summary>
    /// Called after a write transaction at <paramref name="revision"/> was committed to the store. The sink may keep
    /// <paramref name="events"/> (queued for slow streams): the caller must not change or reuse the list afterwards.
    /// </summary>
    void OnCommitted(long revision, IReadOnlyList<MvccEvent> events);
}
