namespace KvStore.EndToEnd.Linearizability;

/// <summary>
/// The checker on small hand-made histories, each drawn as a timeline (time runs left to right, one line per client).
/// Every non-linearizable one is an anomaly a replicated store can really produce.
/// </summary>
public sealed class LinearizabilityCheckerTests
{
    private int _nextId;

    [Fact]
    public void Sequential_reads_and_writes_that_follow_the_register_are_linearizable()
    {
        // c0: |w x=1| |r x→1| |del x| |r x→absent| |cas absent→2 ✓| |r x→2|
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Read(0, "x", "1", 2, 3),
            Delete(0, "x", 4, 5),
            Read(0, "x", null, 6, 7),
            Cas(0, "x", null, "2", true, 8, 9),
            Read(0, "x", "2", 10, 11),
        };

        Check(h).Passed.Should().BeTrue(Check(h).Report());
    }

    [Fact]
    public void Concurrent_writes_may_be_read_in_either_order_while_they_overlap()
    {
        // c0: |---- w x=1 ----|
        // c1:    |---- w x=2 ----|
        // c2:      |r→2|  |r→1|      (both writes still in flight: 2 then 1 is a valid order)
        var h = new[]
        {
            Write(0, "x", "1", 0, 10),
            Write(1, "x", "2", 1, 11),
            Read(2, "x", "2", 2, 3),
            Read(2, "x", "1", 4, 5),
        };

        Check(h).Passed.Should().BeTrue();
    }

    [Fact]
    public void A_stale_read_after_an_acknowledged_write_is_not_linearizable()
    {
        // c0: |w x=1| |w x=2|
        // c1:                 |r x→1|   (a follower serving a read from before the second write)
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Write(0, "x", "2", 2, 3),
            Read(1, "x", "1", 4, 5),
        };

        var r = Check(h);
        r.IsLinearizable.Should().BeFalse();
        r.Inconclusive.Should().BeFalse();
        r.Key.Should().Be("x");
        r.Slice.Select(o => o.Id).Should().Contain(h[2].Id, "the report shows the read that cannot be placed");
        r.Report().Should().Contain("NOT LINEARIZABLE").And.Contain("read x -> 1");
    }

    [Fact]
    public void A_lost_write_is_not_linearizable()
    {
        // c0: |w x=1|        |w x=2 ok|
        // c1:                            |r x→1|  (the acknowledged write of 2 vanished, e.g. a crash lost it)
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Write(0, "x", "2", 2, 3),
            Read(1, "x", "1", 5, 6),
            Read(1, "x", "1", 7, 8),
        };

        Check(h).IsLinearizable.Should().BeFalse();
    }

    [Fact]
    public void A_lost_update_through_two_successful_cas_from_the_same_value_is_not_linearizable()
    {
        // c0: |w x=0| |---- cas 0→1 ✓ ----|
        // c1:           |---- cas 0→2 ✓ ----|   both swapped from 0: one of the updates was lost
        var h = new[]
        {
            Write(0, "x", "0", 0, 1),
            Cas(0, "x", "0", "1", true, 2, 10),
            Cas(1, "x", "0", "2", true, 3, 11),
        };

        Check(h).IsLinearizable.Should().BeFalse();
    }

    [Fact]
    public void A_failed_cas_is_linearizable_only_when_some_order_made_its_comparison_false()
    {
        // c0: |w x=0| |cas 0→1 ✗|            nothing else wrote: the comparison must have held
        var impossible = new[]
        {
            Write(0, "x", "0", 0, 1),
            Cas(0, "x", "0", "1", false, 2, 3),
        };
        Check(impossible).IsLinearizable.Should().BeFalse();

        // c1 overwrites concurrently: the cas may have seen 9
        var possible = new[]
        {
            Write(0, "x", "0", 0, 1),
            Cas(0, "x", "0", "1", false, 2, 6),
            Write(1, "x", "9", 3, 4),
        };
        Check(possible).Passed.Should().BeTrue();
    }

    [Fact]
    public void A_read_of_a_value_never_written_is_not_linearizable()
    {
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Read(1, "x", "garbage", 2, 3),
        };

        Check(h).IsLinearizable.Should().BeFalse();
    }

    [Fact]
    public void A_read_of_a_deleted_key_after_the_delete_returned_is_not_linearizable()
    {
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Delete(0, "x", 2, 3),
            Read(1, "x", "1", 4, 5),
        };

        Check(h).IsLinearizable.Should().BeFalse();
    }

    [Fact]
    public void A_write_with_unknown_outcome_may_take_effect_long_after_it_was_sent()
    {
        // c0: |w x=1 (timed out) ....................
        // c1:          |w x=2| |r x→2| |r x→1|     it took effect only now
        var h = new[]
        {
            Unknown(Write(0, "x", "1", 0, 1)),
            Write(1, "x", "2", 2, 3),
            Read(1, "x", "2", 4, 5),
            Read(1, "x", "1", 6, 7),
        };

        Check(h).Passed.Should().BeTrue();
    }

    [Fact]
    public void A_write_with_unknown_outcome_may_never_take_effect()
    {
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Unknown(Write(0, "x", "2", 2, 3)),
            Read(1, "x", "1", 4, 5),
        };

        Check(h).Passed.Should().BeTrue();
    }

    [Fact]
    public void A_write_with_unknown_outcome_cannot_take_effect_before_it_was_sent()
    {
        // c1 reads 2 before c0 even sent the write of 2
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Read(1, "x", "2", 2, 3),
            Unknown(Write(0, "x", "2", 4, 5)),
        };

        Check(h).IsLinearizable.Should().BeFalse();
    }

    [Fact]
    public void A_failed_write_had_no_effect_and_a_read_of_its_value_is_not_linearizable()
    {
        var h = new[]
        {
            Write(0, "x", "1", 0, 1),
            Write(0, "x", "2", 2, 3) with { Outcome = KvOutcome.Failed },
            Read(1, "x", "2", 4, 5),
        };

        Check(h).IsLinearizable.Should().BeFalse();
    }

    [Fact]
    public void Keys_are_independent_and_a_violation_names_its_key()
    {
        var h = new[]
        {
            Write(0, "a", "1", 0, 1),
            Write(1, "b", "1", 0, 1),
            Read(0, "a", "1", 2, 3),
            Write(1, "b", "2", 2, 3),
            Read(0, "b", "1", 4, 5), // stale on b
        };

        var r = Check(h);
        r.IsLinearizable.Should().BeFalse();
        r.Key.Should().Be("b");
    }

    [Fact]
    public void Many_concurrent_clients_with_timeouts_are_decided_quickly()
    {
        // A seeded simulation of a real register with 6 clients and random timeouts (which still take effect):
        // always linearizable, and the search must decide it well within the budget.
        var rng = new Random(12);
        string? register = null;
        var ops = new List<KvOperation>();
        var pending = new List<(KvOperation Op, int CompleteAt)>();
        for (var t = 0; t < 3000; t++)
        {
            var client = rng.Next(6);
            if (pending.Any(p => p.Op.Client == client))
            {
                continue;
            }

            var kind = (KvOpKind)rng.Next(4);
            var value = $"v{t}";
            var expected = rng.Next(2) == 0 ? register : $"v{rng.Next(t + 1)}";
            var op = new KvOperation(_nextId++, client, "m0", "x", kind, value, expected, t, 0, KvOutcome.Ok);

            // The effect happens atomically at time t; the reply arrives a little later (or never).
            string? observed = register;
            var succeeded = false;
            switch (kind)
            {
                case KvOpKind.Write: register = value; break;
                case KvOpKind.Delete: register = null; break;
                case KvOpKind.Cas:
                    succeeded = register == expected;
                    if (succeeded)
                    {
                        register = value;
                    }

                    break;
            }

            op = op with { Observed = observed, Succeeded = succeeded, Invoked = t - rng.Next(3) };
            var lost = rng.Next(50) == 0;
            pending.Add((lost ? op with { Outcome = KvOutcome.Unknown } : op, t + 1 + rng.Next(4)));
            foreach (var done in pending.Where(p => p.CompleteAt <= t).ToList())
            {
                ops.Add(done.Op with { Completed = done.CompleteAt });
                pending.Remove(done);
            }
        }

        ops.AddRange(pending.Select(p => p.Op with { Completed = p.CompleteAt }));
        var result = LinearizabilityChecker.Check(ops, stepBudgetPerKey: 5_000_000);
        result.Passed.Should().BeTrue(result.Report());
        result.OperationsChecked.Should().BeGreaterThan(500);

        // Corrupt one read in the middle: now it must fail.
        var victim = ops.Where(o => o.Kind == KvOpKind.Read && o.Outcome == KvOutcome.Ok).Skip(100).First();
        var bad = ops.Select(o => o.Id == victim.Id ? o with { Observed = "never-written" } : o).ToList();
        LinearizabilityChecker.Check(bad, stepBudgetPerKey: 5_000_000).IsLinearizable.Should().BeFalse();
    }

    private static LinearizabilityResult Check(IEnumerable<KvOperation> h) => LinearizabilityChecker.Check(h);

    private static KvOperation Unknown(KvOperation op) => op with { Outcome = KvOutcome.Unknown };

    private KvOperation Read(int client, string key, string? observed, long from, long to) =>
        new(_nextId++, client, "m0", key, KvOpKind.Read, null, null, from, to, KvOutcome.Ok, Observed: observed);

    private KvOperation Write(int client, string key, string value, long from, long to) =>
        new(_nextId++, client, "m0", key, KvOpKind.Write, value, null, from, to, KvOutcome.Ok);

    private KvOperation Delete(int client, string key, long from, long to) =>
        new(_nextId++, client, "m0", key, KvOpKind.Delete, null, null, from, to, KvOutcome.Ok);

    private KvOperation Cas(int client, string key, string? expected, string value, bool succeeded, long from, long to) =>
        new(_nextId++, client, "m0", key, KvOpKind.Cas, value, expected, from, to, KvOutcome.Ok, Succeeded: succeeded);
}
