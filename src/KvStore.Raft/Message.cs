namespace KvStore.Raft;

/// <summary>
/// A message between members. The peer transport serializes every public property; which fields matter
/// depends on <see cref="Type"/> (see <see cref="MessageType"/>).
/// </summary>
public sealed class Message
{
    /// <summary>Kind of message.</summary>
    public MessageType Type { get; set; }

    /// <summary>Sender id.</summary>
    public ulong From { get; set; }

    /// <summary>Recipient id.</summary>
    public ulong To { get; set; }

    /// <summary>Sender's term (0 for proposals and read requests forwarded between members).</summary>
    public ulong Term { get; set; }

    /// <summary>Term of the entry at <see cref="Index"/> (or the hint term of a rejection).</summary>
    public ulong LogTerm { get; set; }

    /// <summary>Log index; meaning depends on <see cref="Type"/>.</summary>
    public ulong Index { get; set; }

    /// <summary>Entries carried by <see cref="MessageType.App"/> and <see cref="MessageType.Prop"/>.</summary>
    public IReadOnlyList<Entry> Entries { get; set; } = [];

    /// <summary>Leader's commit index.</summary>
    public ulong Commit { get; set; }

    /// <summary>True when a request is refused.</summary>
    public bool Reject { get; set; }

    /// <summary>On a rejected append: where the leader should probe next.</summary>
    public ulong RejectHint { get; set; }

    /// <summary>Snapshot carried by <see cref="MessageType.Snap"/>.</summary>
    public Snapshot? Snapshot { get; set; }

    /// <summary>Opaque context: read-index request id, or the transfer marker on votes.</summary>
    public ReadOnlyMemory<byte> Context { get; set; }

    /// <summary>A shallow copy (entries and snapshot are immutable and shared).</summary>
    public Message Clone() => (Message)MemberwiseClone();

    /// <inheritdoc/>
    public override string ToString()
    {
        var s = $"{From}->{To} {Type} t{Term}";
        switch (Type)
        {
            case MessageType.App:
                s += $" prev={Index}/{LogTerm} commit={Commit} ents=[{string.Join(',', Entries)}]";
                break;
            case MessageType.AppResp:
                s += Reject ? $" reject idx={Index} hint={RejectHint}/{LogTerm}" : $" idx={Index}";
                break;
            case MessageType.Vote:
            case MessageType.PreVote:
                s += $" last={Index}/{LogTerm}";
                break;
            case MessageType.VoteResp:
            case MessageType.PreVoteResp:
                s += Reject ? " reject" : " grant";
                break;
            case MessageType.Heartbeat:
                s += $" commit={Commit}";
                break;
            case MessageType.Snap:
                s += $" {Snapshot}";
                break;
            case MessageType.Prop:
                s += $" ents={Entries.Count}";
                break;
            case MessageType.ReadIndexResp:
                s += $" idx={Index}";
                break;
            default:
                break;
        }

        return s;
    }
}
