using KvStore.Raft.Tracker;

namespace KvStore.Raft.Tests.Tracker;

/// <summary>
/// The window of unacknowledged appends to one follower. It is a FIFO over a fixed capacity, so the cases cover
/// filling it, freeing a prefix, freeing one at a time and reusing the freed room many times over (wrap-around).
/// </summary>
public sealed class InflightsTests
{
    private static Inflights WithAdded(int capacity, ulong from, int count)
    {
        var inflights = new Inflights(capacity);
        for (var k = 0; k < count; k++)
        {
            inflights.Add(from + (ulong)k);
        }

        return inflights;
    }

    [Fact]
    public void The_window_is_full_at_its_capacity_and_refuses_more()
    {
        var inflights = WithAdded(10, 0, 9);
        inflights.Full.Should().BeFalse();

        inflights.Add(9);

        inflights.Full.Should().BeTrue();
        inflights.Count.Should().Be(10);
        var act = () => inflights.Add(10);
        act.Should().Throw<RaftInvariantException>();
        inflights.Count.Should().Be(10);
    }

    [Theory]
    [InlineData(0UL, 9)]
    [InlineData(4UL, 5)]
    [InlineData(8UL, 1)]
    [InlineData(9UL, 0)]
    [InlineData(100UL, 0)]
    public void Free_le_frees_every_message_up_to_the_acknowledged_index(ulong to, int wantLeft)
    {
        var inflights = WithAdded(10, 0, 10);

        inflights.FreeLE(to);

        inflights.Count.Should().Be(wantLeft);
        inflights.Full.Should().Be(wantLeft == 10);
    }

    [Fact]
    public void Free_le_below_the_oldest_message_frees_nothing()
    {
        var inflights = WithAdded(10, 5, 5);

        inflights.FreeLE(4);

        inflights.Count.Should().Be(5);
    }

    [Fact]
    public void Free_le_is_idempotent_for_an_index_already_freed()
    {
        var inflights = WithAdded(10, 0, 10);
        inflights.FreeLE(4);

        inflights.FreeLE(2);
        inflights.FreeLE(4);

        inflights.Count.Should().Be(5);
    }

    [Fact]
    public void Free_first_one_frees_only_the_oldest_message()
    {
        var inflights = WithAdded(10, 0, 10);

        inflights.FreeFirstOne();

        inflights.Count.Should().Be(9);
        inflights.Full.Should().BeFalse();

        // The oldest left is 1: freeing up to 1 frees exactly one more.
        inflights.FreeLE(1);
        inflights.Count.Should().Be(8);
    }

    [Fact]
    public void Free_first_one_on_an_empty_window_does_nothing()
    {
        var inflights = new Inflights(3);
        inflights.FreeFirstOne();
        inflights.Count.Should().Be(0);
    }

    [Fact]
    public void Freed_room_is_reused_across_many_wrap_arounds_in_order()
    {
        var inflights = WithAdded(10, 0, 5);
        ulong next = 5;

        // Keep the window between half and full while indexes run far past the capacity.
        for (var round = 0; round < 20; round++)
        {
            while (!inflights.Full)
            {
                inflights.Add(next++);
            }

            inflights.Count.Should().Be(10);

            // The oldest in flight is next - 10: freeing up to next - 6 frees exactly five.
            inflights.FreeLE(next - 6);
            inflights.Count.Should().Be(5, $"round {round} keeps the five newest");
        }

        inflights.FreeLE(next - 2);
        inflights.Count.Should().Be(1);
        inflights.FreeLE(next - 1);
        inflights.Count.Should().Be(0);
    }

    [Fact]
    public void Reset_empties_the_window()
    {
        var inflights = WithAdded(4, 1, 4);

        inflights.Reset();

        inflights.Count.Should().Be(0);
        inflights.Full.Should().BeFalse();
        inflights.Add(100);
        inflights.Count.Should().Be(1);
    }
}
