namespace KvStore.Raft;

/// <summary>
/// A released linearizable read: once the application has applied up to <see cref="Index"/>, it may answer the read
/// identified by <see cref="Context"/> from its local state.
/// </summary>
/// <param name="Index">Commit index at the time leadership was confirmed.</param>
/// <param name="Context">The context passed to <see cref="RaftNode.ReadIndex"/>.</param>
public sealed record ReadState(ulong Index, ReadOnlyMemory<byte> Context);
