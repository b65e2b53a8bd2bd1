using Google.Protobuf;
using KvStore.Raft;
using KvStore.Raft.Wire;

namespace KvStore.Server.Peer;

/// <summary>
/// Converts between <see cref="KvStore.Raft"/> types and their wire form (protos/kvstore/raft.proto). Entry data and
/// contexts are wrapped, not copied, on the way out; on the way in they alias the parsed message's buffers. A snapshot
/// travels as metadata only: its bytes are streamed separately (<see cref="SnapshotChunk"/>).
/// </summary>
public static class MessageCodec
{
    /// <summary>Wire form of <paramref name="message"/> (snapshot data is left out).</summary>
    public static RaftMessage ToWire(Message message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var wire = new RaftMessage
        {
            Type = (RaftMessageType)(int)message.Type,
            From = message.From,
            To = message.To,
            Term = message.Term,
            LogTerm = message.LogTerm,
            Index = message.Index,
            Commit = message.Commit,
            Reject = message.Reject,
            RejectHint = message.RejectHint,
        };
        if (!message.Context.IsEmpty)
        {
            wire.Context = UnsafeByteOperations.UnsafeWrap(message.Context);
        }

        foreach (var entry in message.Entries)
        {
            wire.Entries.Add(ToWire(entry));
        }

        if (message.Snapshot is { } snapshot)
        {
            wire.Snapshot = ToWire(snapshot.Metadata);
        }

        return wire;
    }

    /// <summary>The message that <paramref name="wire"/> encodes; a snapshot comes back with empty data.</summary>
    public static Message FromWire(RaftMessage wire)
    {
        ArgumentNullException.ThrowIfNull(wire);
        Entry[] entries = [];
        if (wire.Entries.Count > 0)
        {
            entries = new Entry[wire.Entries.Count];
            for (var i = 0; i < entries.Length; i++)
            {
                entries[i] = FromWire(wire.Entries[i]);
            }
        }

        return new Message
        {
            Type = (MessageType)(int)wire.Type,
            From = wire.From,
            To = wire.To,
            Term = wire.Term,
            LogTerm = wire.LogTerm,
            Index = wire.Index,
            Entries = entries,
            Commit = wire.Commit,
            Reject = wire.Reject,
            RejectHint = wire.RejectHint,
            Snapshot = wire.Snapshot is null ? null : new Snapshot { Metadata = FromWire(wire.Snapshot) },
            Context = wire.Context.Memory,
        };
    }

    /// <summary>Wire form of an entry (data wrapped, not copied).</summary>
    public static RaftEntry ToWire(Entry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return new RaftEntry
        {
            Index = entry.Index,
            Term = entry.Term,
            Type = (RaftEntryType)(int)entry.Type,
            Data = entry.Data.IsEmpty ? ByteString.Empty : UnsafeByteOperations.UnsafeWrap(entry.Data),
        };
    }

    /// <summary>The entry that <paramref name="wire"/> encodes (data aliases the parsed buffer).</summary>
    public static Entry FromWire(RaftEntry wire)
    {
        ArgumentNullException.ThrowIfNull(wire);
        return new Entry { Index = wire.Index, Term = wire.Term, Type = (EntryType)(int)wire.Type, Data = wire.Data.Memory };
    }

    /// <summary>Wire form of snapshot metadata.</summary>
    public static RaftSnapshotMetadata ToWire(SnapshotMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        var conf = new RaftConfState();
        conf.Voters.Add(metadata.ConfState.Voters);
        conf.Learners.Add(metadata.ConfState.Learners);
        return new RaftSnapshotMetadata { Index = metadata.Index, Term = metadata.Term, ConfState = conf };
    }

    /// <summary>The snapshot metadata that <paramref name="wire"/> encodes.</summary>
    public static SnapshotMetadata FromWire(RaftSnapshotMetadata wire)
    {
        ArgumentNullException.ThrowIfNull(wire);
        var conf = wire.ConfState is null || (wire.ConfState.Voters.Count == 0 && wire.ConfState.Learners.Count == 0)
            ? ConfState.Empty
            : new ConfState { Voters = [.. wire.ConfState.Voters], Learners = [.. wire.ConfState.Learners] };
        return new SnapshotMetadata { Index = wire.Index, Term = wire.Term, ConfState = conf };
    }
}
