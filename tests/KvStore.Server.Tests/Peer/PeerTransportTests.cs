using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Grpc.Core;
using Grpc.Net.Client;
using KvStore.Raft;
using KvStore.Raft.Wire;
using KvStore.Server.Peer;

namespace KvStore.Server.Tests.Peer;

public sealed class PeerTransportTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Messages_are_delivered_in_order_per_peer_pair()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        await using var c = await PeerHost.StartAsync(3, _dir.Sub("c"));
        Connect(a, b, c);
        Connect(b, a);

        const int count = 2000;
        var batch = new List<Message>();
        for (ulong i = 1; i <= count; i++)
        {
            batch.Add(Heartbeat(1, 2, i));
            batch.Add(Heartbeat(1, 3, i));
            if (i % 2 == 0)
            {
                batch.Add(Heartbeat(2, 1, i / 2));
            }

            if (i % 37 == 0)
            {
                a.Transport.Send(batch.Where(m => m.From == 1).ToList());
                b.Transport.Send(batch.Where(m => m.From == 2).ToList());
                batch.Clear();
            }
        }

        a.Transport.Send(batch.Where(m => m.From == 1).ToList());
        b.Transport.Send(batch.Where(m => m.From == 2).ToList());

        await ExpectSequence(b, from: 1, count);
        await ExpectSequence(c, from: 1, count);
        await ExpectSequence(a, from: 2, count / 2);
    }

    [Fact]
    public async Task Entries_with_data_round_trip_exactly_including_a_6_MiB_one()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        Connect(a, b);

        var random = new Random(11);
        byte[] Bytes(int n)
        {
            var data = new byte[n];
            random.NextBytes(data);
            return data;
        }

        var sent = new Message
        {
            Type = MessageType.App,
            From = 1,
            To = 2,
            Term = 5,
            LogTerm = 4,
            Index = 10,
            Commit = 9,
            Context = Bytes(16),
            Entries =
            [
                new Entry { Index = 11, Term = 5, Type = EntryType.Normal, Data = Bytes(1) },
                new Entry { Index = 12, Term = 5, Type = EntryType.ConfChange, Data = Bytes(300) },
                new Entry { Index = 13, Term = 5, Type = EntryType.Normal },
                new Entry { Index = 14, Term = 5, Type = EntryType.Normal, Data = Bytes(6 * 1024 * 1024) },
            ],
        };
        var reply = new Message { Type = MessageType.AppResp, From = 1, To = 2, Term = 5, Index = 3, Reject = true, RejectHint = 2, LogTerm = 1 };
        a.Transport.Send([sent, reply]);

        var got = await Wait.For(b.Handler.Messages.Reader.ReadAsync());
        got.Should().BeEquivalentTo(sent, o => o.ComparingByMembers<Message>().Excluding(m => m.Entries).Excluding(m => m.Context));
        got.Context.ToArray().Should().Equal(sent.Context.ToArray());
        got.Entries.Select(e => (e.Index, e.Term, e.Type)).Should().Equal(sent.Entries.Select(e => (e.Index, e.Term, e.Type)));
        for (var i = 0; i < sent.Entries.Count; i++)
        {
            got.Entries[i].Data.Span.SequenceEqual(sent.Entries[i].Data.Span).Should().BeTrue($"entry {i} data must match");
        }

        var gotReply = await Wait.For(b.Handler.Messages.Reader.ReadAsync());
        gotReply.Should().BeEquivalentTo(reply, o => o.ComparingByMembers<Message>().Excluding(m => m.Context));
        gotReply.Context.IsEmpty.Should().BeTrue();
    }

    [Fact]
    public async Task A_large_snapshot_streams_in_chunks_while_heartbeats_keep_flowing()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        Connect(a, b);
        await Wait.ForConnections(a.Transport, 2, 1);

        var data = new byte[8 * 1024 * 1024];
        new Random(3).NextBytes(data);
        var firstChunkTaken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var heartbeatsSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var snap = SnapMessage(from: 1, to: 2, index: 500);

        // The source hands over its first megabyte, then holds the transfer open until the test has seen heartbeats
        // sent after the transfer began arrive at the receiver.
        async IAsyncEnumerable<ReadOnlyMemory<byte>> Source([EnumeratorCancellation] CancellationToken token = default)
        {
            yield return data.AsMemory(0, 1024 * 1024);
            firstChunkTaken.TrySetResult();
            await heartbeatsSeen.Task.WaitAsync(Wait.Timeout, token);
            yield return data.AsMemory(1024 * 1024);
        }

        a.Transport.SendSnapshot(snap, SnapshotSource.FromChunks(Source(), data.Length));
        await Wait.For(firstChunkTaken.Task);

        for (ulong i = 1; i <= 20; i++)
        {
            a.Transport.Send([Heartbeat(1, 2, i)]);
            var heartbeat = await Wait.For(b.Handler.Messages.Reader.ReadAsync());
            heartbeat.Index.Should().Be(i);
        }

        b.Handler.Snapshots.Reader.TryPeek(out _).Should().BeFalse("the snapshot is still in flight");
        heartbeatsSeen.SetResult();

        var received = await Wait.For(b.Handler.Snapshots.Reader.ReadAsync());
        received.Size.Should().Be(data.Length);
        received.Message.Type.Should().Be(MessageType.Snap);
        received.Message.From.Should().Be(1UL);
        received.Message.Snapshot!.Metadata.Index.Should().Be(500UL);
        received.Message.Snapshot.Metadata.ConfState.Voters.Should().Equal(1UL, 2UL, 3UL);
        Path.GetDirectoryName(received.FilePath).Should().Be(_dir.Sub("b"));
        SHA256.HashData(await File.ReadAllBytesAsync(received.FilePath)).Should().Equal(SHA256.HashData(data));

        (await Wait.For(a.Handler.SnapshotReports.Reader.ReadAsync())).Should().Be((2UL, true));
    }

    [Fact]
    public async Task A_snapshot_message_passed_to_Send_is_streamed_from_its_data()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"), configure: o => o with { SnapshotChunkBytes = 64 * 1024 });
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        Connect(a, b);

        var data = new byte[(3 * 1024 * 1024) + 17];
        new Random(5).NextBytes(data);
        var snap = SnapMessage(from: 1, to: 2, index: 9, data);
        a.Transport.Send([Heartbeat(1, 2, 1), snap, Heartbeat(1, 2, 2)]);

        var received = await Wait.For(b.Handler.Snapshots.Reader.ReadAsync());
        (await File.ReadAllBytesAsync(received.FilePath)).AsSpan().SequenceEqual(data).Should().BeTrue();
        (await Wait.For(a.Handler.SnapshotReports.Reader.ReadAsync())).Should().Be((2UL, true));
        (await Wait.For(b.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(1UL);
        (await Wait.For(b.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(2UL);
    }

    [Fact]
    public async Task After_a_peer_restarts_the_sender_reconnects_and_later_messages_arrive()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        var port = b.Url.Port;
        Connect(a, b);
        a.Transport.Send([Heartbeat(1, 2, 1)]);
        (await Wait.For(b.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(1UL);
        await Wait.ForConnections(a.Transport, 2, 1);

        await b.DisposeAsync();
        (await Wait.For(a.Handler.Unreachable.Reader.ReadAsync())).Should().Be(2UL);
        a.Transport.ActiveSince(2).Should().BeNull();

        await using var restarted = await PeerHost.StartAsync(2, _dir.Sub("b2"), port: port);
        await Wait.ForConnections(a.Transport, 2, 2);
        a.Transport.ActiveSince(2).Should().NotBeNull();

        a.Transport.Send([Heartbeat(1, 2, 2), Heartbeat(1, 2, 3)]);
        var indexes = new List<ulong>();
        while (!indexes.Contains(3))
        {
            indexes.Add((await Wait.For(restarted.Handler.Messages.Reader.ReadAsync())).Index);
        }

        indexes.Should().EndWith([2UL, 3UL]);
    }

    [Fact]
    public async Task Updating_a_peers_urls_moves_its_stream_to_the_new_address()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        await using var moved = await PeerHost.StartAsync(2, _dir.Sub("b2"));
        Connect(a, b);
        await Wait.ForConnections(a.Transport, 2, 1);

        a.Transport.UpdatePeer(2, [moved.Url]).Should().BeTrue();
        await Wait.ForConnections(a.Transport, 2, 2);
        a.Transport.Send([Heartbeat(1, 2, 7)]);

        (await Wait.For(moved.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(7UL);
        b.Handler.Messages.Reader.TryPeek(out _).Should().BeFalse();
    }

    [Fact]
    public async Task A_snapshot_the_receiving_node_refuses_is_reported_failed_and_its_file_removed()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        b.Handler.RefuseSnapshots = new InvalidOperationException("not now");
        Connect(a, b);

        a.Transport.Send([SnapMessage(1, 2, 40, new byte[100_000])]);

        var received = await Wait.For(b.Handler.Snapshots.Reader.ReadAsync());
        (await Wait.For(a.Handler.SnapshotReports.Reader.ReadAsync())).Should().Be((2UL, false));
        File.Exists(received.FilePath).Should().BeFalse();
    }

    [Fact]
    public async Task A_peer_of_another_cluster_is_refused_and_both_sides_log_it()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"), clusterId: 0xAAAA);
        await using var x = await PeerHost.StartAsync(2, _dir.Sub("x"), clusterId: 0xBBBB);
        Connect(a, x);
        a.Transport.Send([Heartbeat(1, 2, 1)]);

        var expected = "rejected connection from member 0000000000000001 of cluster 000000000000aaaa; this member belongs to cluster 000000000000bbbb";
        (await x.Logs.WaitForAsync("rejected connection")).Should().Contain(expected);
        (await a.Logs.WaitForAsync("refused this member")).Should().Contain(expected);
        (await Wait.For(a.Handler.Unreachable.Reader.ReadAsync())).Should().Be(2UL);
        x.Handler.Messages.Reader.TryPeek(out _).Should().BeFalse();

        // The same refusal as seen by a bare gRPC client.
        using var channel = GrpcChannel.ForAddress(x.Url);
        var client = new RaftPeer.RaftPeerClient(channel);
        var headers = new Metadata
        {
            { "kvstore-cluster-id", "000000000000aaaa" },
            { "kvstore-from-member-id", "0000000000000001" },
            { "kvstore-to-member-id", "0000000000000002" },
        };
        using var call = client.Stream(headers);
        var refused = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext().WaitAsync(Wait.Timeout));
        refused.StatusCode.Should().Be(StatusCode.FailedPrecondition);
        refused.Status.Detail.Should().Be(expected);
    }

    [Fact]
    public async Task A_full_queue_drops_messages_and_reports_the_peer_unreachable()
    {
        var port = LoopbackPorts.TakeOne();
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"), configure: o => o with { QueueCapacity = 4 });
        a.Transport.AddPeer(2, [new Uri($"http://127.0.0.1:{port}")]);

        // Nobody listens on the port: nothing is drained, the first four wait, the rest are dropped.
        a.Transport.Send([.. Enumerable.Range(1, 10).Select(i => Heartbeat(1, 2, (ulong)i))]);
        a.Transport.Sender(2)!.Dropped.Should().Be(6);
        (await Wait.For(a.Handler.Unreachable.Reader.ReadAsync())).Should().Be(2UL);
        (await a.Logs.WaitForAsync("queue to peer")).Should().Contain("is full (4 messages)");

        // Once the peer appears, what was queued is delivered in order.
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"), port: port);
        for (ulong i = 1; i <= 4; i++)
        {
            (await Wait.For(b.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(i);
        }
    }

    [Fact]
    public async Task The_peer_service_answers_on_the_peer_listener_only()
    {
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"), withOtherListener: true);
        var headers = new Metadata
        {
            { "kvstore-cluster-id", "00000000000000c1" },
            { "kvstore-from-member-id", "0000000000000001" },
            { "kvstore-to-member-id", "0000000000000002" },
        };

        using var other = GrpcChannel.ForAddress(b.OtherUrl!);
        using var blocked = new RaftPeer.RaftPeerClient(other).Stream(headers);
        var refused = await Assert.ThrowsAsync<RpcException>(() => blocked.ResponseStream.MoveNext().WaitAsync(Wait.Timeout));
        refused.StatusCode.Should().Be(StatusCode.Unimplemented);

        using var peer = GrpcChannel.ForAddress(b.Url);
        using var allowed = new RaftPeer.RaftPeerClient(peer).Stream(headers);
        (await allowed.ResponseStream.MoveNext().WaitAsync(Wait.Timeout)).Should().BeTrue();
        allowed.ResponseStream.Current.MemberId.Should().Be(2UL);
    }

    [Fact]
    public async Task Removing_a_peer_stops_sending_and_unknown_peers_are_ignored()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        Connect(a, b);
        await Wait.ForConnections(a.Transport, 2, 1);

        (await a.Transport.RemovePeerAsync(2)).Should().BeTrue();
        a.Transport.Peers.Should().BeEmpty();
        a.Transport.Send([Heartbeat(1, 2, 1), Heartbeat(1, 9, 1)]);
        a.Transport.SendSnapshot(SnapMessage(1, 9, 5), SnapshotSource.FromMemory(new byte[10]));
        (await Wait.For(a.Handler.SnapshotReports.Reader.ReadAsync())).Should().Be((9UL, false));

        Connect(a, b);
        a.Transport.Send([Heartbeat(1, 2, 2)]);
        (await Wait.For(b.Handler.Messages.Reader.ReadAsync())).Index.Should().Be(2UL);
    }

    [Fact]
    public async Task Forwarded_proposals_and_reads_keep_their_originator_while_other_kinds_from_another_sender_are_dropped()
    {
        await using var a = await PeerHost.StartAsync(1, _dir.Sub("a"));
        await using var b = await PeerHost.StartAsync(2, _dir.Sub("b"));
        Connect(a, b);

        // Member 1 relays what member 3 sent it (it followed an older leader); an append "from 3" on 1's stream is forged.
        a.Transport.Send(
        [
            new Message { Type = MessageType.Prop, From = 3, To = 2, Entries = [new Entry { Data = new byte[] { 7 } }] },
            new Message { Type = MessageType.App, From = 3, To = 2, Term = 1 },
            new Message { Type = MessageType.ReadIndex, From = 3, To = 2, Entries = [new Entry { Data = new byte[] { 9 } }] },
            Heartbeat(1, 2, 1),
        ]);

        var received = new List<Message>();
        for (var i = 0; i < 3; i++)
        {
            received.Add(await Wait.For(b.Handler.Messages.Reader.ReadAsync()));
        }

        received.Select(m => (m.Type, m.From)).Should().Equal(
            (MessageType.Prop, 3UL), (MessageType.ReadIndex, 3UL), (MessageType.Heartbeat, 1UL));
        received[0].Entries.Single().Data.ToArray().Should().Equal(7);
        await b.Logs.WaitForAsync("it claims to come from");
    }

    private static void Connect(PeerHost from, params PeerHost[] to)
    {
        foreach (var peer in to)
        {
            from.Transport.AddPeer(peer.MemberId, [peer.Url]);
        }
    }

    private static Message Heartbeat(ulong from, ulong to, ulong sequence) =>
        new() { Type = MessageType.Heartbeat, From = from, To = to, Term = 1, Index = sequence };

    private static Message SnapMessage(ulong from, ulong to, ulong index, byte[]? data = null) => new()
    {
        Type = MessageType.Snap,
        From = from,
        To = to,
        Term = 2,
        Snapshot = new Snapshot
        {
            Metadata = new SnapshotMetadata { Index = index, Term = 2, ConfState = new ConfState { Voters = [1, 2, 3] } },
            Data = data ?? ReadOnlyMemory<byte>.Empty,
        },
    };

    private static async Task ExpectSequence(PeerHost host, ulong from, int count)
    {
        for (ulong i = 1; i <= (ulong)count; i++)
        {
            var message = await Wait.For(host.Handler.Messages.Reader.ReadAsync());
            message.From.Should().Be(from);
            message.To.Should().Be(host.MemberId);
            message.Index.Should().Be(i);
        }
    }

}
