using System.Text;
using KvStore.Raft.ReadIndex;

namespace KvStore.Raft.Tests.ReadIndex;

/// <summary>
/// The leader's queue of read-index requests waiting for a heartbeat round: each request is acknowledged by voters,
/// and a majority for one request releases it together with every request queued before it.
/// </summary>
public sealed class ReadOnlyQueueTests
{
    private static readonly ulong[] ThreeVoters = [1, 2, 3];

    private static Message Request(string context) => new() { Type = MessageType.ReadIndex, Context = Encoding.UTF8.GetBytes(context) };

    private static ReadOnlyMemory<byte> Ctx(string context) => Encoding.UTF8.GetBytes(context);

    private static ReadOnlyQueue QueueOf(params string[] contexts)
    {
        var queue = new ReadOnlyQueue();
        for (var k = 0; k < contexts.Length; k++)
        {
            queue.Add(10 + (ulong)k, Request(contexts[k]));
        }

        return queue;
    }

    [Fact]
    public void A_request_is_confirmed_once_a_majority_of_voters_acknowledged_it()
    {
        var queue = QueueOf("a");

        queue.Ack(1, Ctx("a"), ThreeVoters).Should().BeFalse("the leader alone is one of three");
        queue.Ack(1, Ctx("a"), ThreeVoters).Should().BeFalse("the same member acknowledging twice still counts once");
        queue.Ack(3, Ctx("a"), ThreeVoters).Should().BeTrue();
    }

    [Fact]
    public void A_sole_voter_confirms_its_own_request()
    {
        var queue = QueueOf("a");
        queue.Ack(1, Ctx("a"), [1]).Should().BeTrue();
    }

    [Fact]
    public void Acknowledgements_from_non_voters_do_not_count()
    {
        var queue = QueueOf("a");

        queue.Ack(1, Ctx("a"), ThreeVoters);
        queue.Ack(4, Ctx("a"), ThreeVoters).Should().BeFalse();
        queue.Ack(5, Ctx("a"), ThreeVoters).Should().BeFalse();
    }

    [Fact]
    public void An_acknowledgement_for_an_unknown_context_confirms_nothing()
    {
        var queue = QueueOf("a");

        queue.Ack(2, Ctx("zzz"), ThreeVoters).Should().BeFalse();
        queue.Ack(3, Ctx("zzz"), ThreeVoters).Should().BeFalse();
        queue.Advance(Ctx("zzz")).Should().BeEmpty();
        queue.IsEmpty.Should().BeFalse();
    }

    [Theory]
    [InlineData("a", new[] { "a" }, new[] { "b", "c" })]
    [InlineData("b", new[] { "a", "b" }, new[] { "c" })] // earlier requests are confirmed by a later heartbeat
    [InlineData("c", new[] { "a", "b", "c" }, new string[] { })]
    public void Advance_releases_in_order_every_request_up_to_the_confirmed_one(string confirmed, string[] wantReleased, string[] wantLeft)
    {
        var queue = QueueOf("a", "b", "c");

        var released = queue.Advance(Ctx(confirmed));

        released.Select(r => Encoding.UTF8.GetString(r.Request.Context.Span)).Should().Equal(wantReleased);
        released.Select(r => r.Index).Should().Equal(wantReleased.Select(c => 10 + (ulong)(c[0] - 'a')));
        queue.IsEmpty.Should().Be(wantLeft.Length == 0);
        foreach (var left in wantLeft)
        {
            queue.Advance(Ctx(left)).Should().NotBeEmpty($"{left} is still pending");
        }
    }

    [Fact]
    public void A_duplicate_context_keeps_the_first_request_and_its_index()
    {
        var queue = new ReadOnlyQueue();
        var first = Request("a");
        queue.Add(5, first);
        queue.Add(9, Request("a"));

        var released = queue.Advance(Ctx("a"));

        released.Should().ContainSingle();
        released[0].Index.Should().Be(5);
        released[0].Request.Should().BeSameAs(first);
    }

    [Fact]
    public void Heartbeats_carry_the_newest_pending_context()
    {
        var queue = new ReadOnlyQueue();
        queue.LastPendingContext.IsEmpty.Should().BeTrue();

        queue.Add(1, Request("a"));
        queue.Add(2, Request("b"));
        Encoding.UTF8.GetString(queue.LastPendingContext.Span).Should().Be("b");

        queue.Advance(Ctx("b"));
        queue.LastPendingContext.IsEmpty.Should().BeTrue();
    }

    [Fact]
    public void Clear_drops_every_pending_request()
    {
        var queue = QueueOf("a", "b");

        queue.Clear();

        queue.IsEmpty.Should().BeTrue();
        queue.Ack(2, Ctx("a"), ThreeVoters).Should().BeFalse();
        queue.Advance(Ctx("a")).Should().BeEmpty();
    }
}
