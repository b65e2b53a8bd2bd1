using KvStore.Raft;
using KvStore.Server.Peer;

namespace KvStore.Server.Replication;

/// <summary>
/// What the raft loop and the apply loop read: each producer writes a typed item, and each loop switches on the item's
/// kind, so no payload travels as an <see cref="object"/> to be recognized by a type test.
/// </summary>
public sealed partial class RaftHost
{
    /// <summary>What an <see cref="InboxItem"/> asks of the raft loop.</summary>
    private enum InboxKind : byte
    {
        Proposal,
        Message,
        Snapshot,
        Unreachable,
        SnapshotStatus,
        Read,
        Tick,
        TickAdvance,
        Control,
    }

    /// <summary>
    /// One item for the raft loop: its kind and the payload of that kind (the other fields are left unset). Reports,
    /// ticks and reads carry values only, so they allocate nothing.
    /// </summary>
    private readonly struct InboxItem
    {
        private InboxItem(InboxKind kind) => Kind = kind;

        /// <summary>A tick of the heartbeat timer.</summary>
        public static InboxItem Tick => new(InboxKind.Tick);

        /// <summary>Wakes the loop to send the pending read batch.</summary>
        public static InboxItem Read => new(InboxKind.Read);

        public InboxKind Kind { get; }

        /// <summary>A proposal of this member.</summary>
        public Proposal? Proposal { get; private init; }

        /// <summary>A message from a peer.</summary>
        public Message? Message { get; private init; }

        /// <summary>A snapshot from the leader, its file already received.</summary>
        public ReceivedSnapshot? Snapshot { get; private init; }

        /// <summary>A conf change or a leader transfer.</summary>
        public ControlRequest? Control { get; private init; }

        /// <summary>The peer an unreachable or a snapshot status is about.</summary>
        public ulong Peer { get; private init; }

        /// <summary>Snapshot status: whether the snapshot reached <see cref="Peer"/>.</summary>
        public bool Succeeded { get; private init; }

        /// <summary>Tick advance: election ticks to fast-forward.</summary>
        public int Ticks { get; private init; }

        public static InboxItem Of(Proposal proposal) => new(InboxKind.Proposal) { Proposal = proposal };

        public static InboxItem Of(Message message) => new(InboxKind.Message) { Message = message };

        public static InboxItem Of(ReceivedSnapshot snapshot) => new(InboxKind.Snapshot) { Snapshot = snapshot };

        public static InboxItem Of(ControlRequest control) => new(InboxKind.Control) { Control = control };

        public static InboxItem Unreachable(ulong peer) => new(InboxKind.Unreachable) { Peer = peer };

        public static InboxItem SnapshotStatus(ulong peer, bool succeeded) =>
            new(InboxKind.SnapshotStatus) { Peer = peer, Succeeded = succeeded };

        public static InboxItem TickAdvance(int ticks) => new(InboxKind.TickAdvance) { Ticks = ticks };
    }

    /// <summary>What an <see cref="ApplyItem"/> asks of the apply loop.</summary>
    private enum ApplyKind : byte
    {
        Entries,
        SnapshotInstall,
    }

    /// <summary>One item for the apply loop, in commit order: a batch of committed entries or a snapshot to install.</summary>
    private readonly struct ApplyItem
    {
        private ApplyItem(ApplyKind kind) => Kind = kind;

        public ApplyKind Kind { get; }

        /// <summary>Committed entries, in index order.</summary>
        public IReadOnlyList<Entry>? Entries { get; private init; }

        /// <summary>A snapshot from the leader, installed after the entries queued before it.</summary>
        public SnapshotInstall? Install { get; private init; }

        public static ApplyItem Of(IReadOnlyList<Entry> entries) => new(ApplyKind.Entries) { Entries = entries };

        public static ApplyItem Of(SnapshotInstall install) => new(ApplyKind.SnapshotInstall) { Install = install };
    }

    /// <summary>Work run on the raft loop with the node (conf changes, transfers); its result goes back to the caller.</summary>
    private sealed class ControlRequest(Func<RaftNode, RequestResult> action)
    {
        public TaskCompletionSource<RequestResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Run(RaftNode node) => Result.TrySetResult(action(node));
    }
}
