using Google.Protobuf;
using KvStore.Raft;
using KvStore.Raft.Wire;
using KvStore.Server.Peer;

namespace KvStore.Server.Tests.Peer;

public sealed class MessageCodecTests
{
    [Fact]
    public void Wire_enums_have_the_raft_numbers()
    {
        foreach (var type in Enum.GetValues<MessageType>())
        {
            var wire = (RaftMessageType)(int)type;
            Enum.IsDefined(wire).Should().BeTrue($"{type} needs a wire value");
            wire.ToString().Should().Be(type.ToString());
        }

        Enum.GetValues<RaftMessageType>().Should().HaveCount(Enum.GetValues<MessageType>().Length);
        foreach (var type in Enum.GetValues<EntryType>())
        {
            ((RaftEntryType)(int)type).ToString().Should().Be(type.ToString());
        }
    }

    [Fact]
    public void Every_field_round_trips_through_bytes()
    {
        var data = new byte[70_000];
        new Random(7).NextBytes(data);
        var message = new Message
        {
            Type = MessageType.App,
            From = 0xFFFF_FFFF_FFFF_FFF1,
            To = 2,
            Term = 9,
            LogTerm = 8,
            Index = 100,
            Commit = 99,
            Reject = true,
            RejectHint = 42,
            Context = new byte[] { 1, 2, 3 },
            Entries =
            [
                new Entry { Index = 101, Term = 9, Type = EntryType.Normal, Data = data },
                new Entry { Index = 102, Term = 9, Type = EntryType.ConfChange, Data = new byte[] { 5 } },
                new Entry { Index = 103, Term = 9 },
            ],
        };

        var bytes = MessageCodec.ToWire(message).ToByteArray();
        var back = MessageCodec.FromWire(RaftMessage.Parser.ParseFrom(bytes));

        back.Should().BeEquivalentTo(message, o => o.ComparingByMembers<Message>().Excluding(m => m.Entries).Excluding(m => m.Context));
        back.Context.ToArray().Should().Equal(1, 2, 3);
        back.Entries.Should().HaveCount(3);
        for (var i = 0; i < 3; i++)
        {
            back.Entries[i].Index.Should().Be(message.Entries[i].Index);
            back.Entries[i].Term.Should().Be(message.Entries[i].Term);
            back.Entries[i].Type.Should().Be(message.Entries[i].Type);
            back.Entries[i].Data.ToArray().Should().Equal(message.Entries[i].Data.ToArray());
        }
    }

    [Fact]
    public void Snapshot_metadata_travels_without_data()
    {
        var message = new Message
        {
            Type = MessageType.Snap,
            From = 1,
            To = 3,
            Term = 4,
            Snapshot = new Snapshot
            {
                Metadata = new SnapshotMetadata { Index = 77, Term = 3, ConfState = new ConfState { Voters = [1, 2, 3], Learners = [4] } },
                Data = new byte[] { 9, 9, 9 },
            },
        };

        var back = MessageCodec.FromWire(RaftMessage.Parser.ParseFrom(MessageCodec.ToWire(message).ToByteArray()));

        back.Snapshot.Should().NotBeNull();
        back.Snapshot!.Data.IsEmpty.Should().BeTrue();
        back.Snapshot.Metadata.Index.Should().Be(77);
        back.Snapshot.Metadata.Term.Should().Be(3);
        back.Snapshot.Metadata.ConfState.Voters.Should().Equal(1UL, 2UL, 3UL);
        back.Snapshot.Metadata.ConfState.Learners.Should().Equal(4UL);
    }

    [Fact]
    public void Messages_without_snapshot_or_context_stay_empty()
    {
        var back = MessageCodec.FromWire(MessageCodec.ToWire(new Message { Type = MessageType.Heartbeat, From = 1, To = 2 }));

        back.Snapshot.Should().BeNull();
        back.Context.IsEmpty.Should().BeTrue();
        back.Entries.Should().BeEmpty();
    }
}
