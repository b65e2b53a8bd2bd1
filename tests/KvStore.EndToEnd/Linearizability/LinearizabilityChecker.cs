using System.Text;

namespace KvStore.EndToEnd.Linearizability;

/// <summary>The verdict on a history, with what a reader needs to see why when it is not linearizable.</summary>
/// <param name="IsLinearizable">True when every key's history has a linearization.</param>
/// <param name="Inconclusive">True when the search for some key hit its step budget before deciding (not a pass).</param>
/// <param name="Key">The first key found without a linearization (or the inconclusive one).</param>
/// <param name="Explanation">Where the longest partial linearization got stuck, in words.</param>
/// <param name="Slice">The operations around the point of failure, in invocation order.</param>
/// <param name="OperationsChecked">Operations that took part in the search (failed ones and unknown reads are left out).</param>
public sealed record LinearizabilityResult(bool IsLinearizable, bool Inconclusive, string? Key, string Explanation, IReadOnlyList<KvOperation> Slice, int OperationsChecked)
{
    public bool Passed => IsLinearizable && !Inconclusive;

    public string Report()
    {
        var sb = new StringBuilder();
        sb.Append(Passed ? "linearizable" : Inconclusive ? "INCONCLUSIVE" : "NOT LINEARIZABLE")
            .Append($" ({OperationsChecked} operations checked)");
        if (!Passed)
        {
            sb.Append("; key ").Append(Key).Append(": ").Append(Explanation).Append('\n');
            foreach (var op in Slice)
            {
                sb.Append("  ").Append(op).Append('\n');
            }
        }

        return sb.ToString();
    }
}

/// <summary>
/// Decides whether a history of single-key operations (read, write, delete, cas) is linearizable against a register
/// per key. Linearizability is local (Herlihy and Wing): a history is linearizable iff each key's sub-history is,
/// so every key is searched on its own, which keeps the search small.
/// </summary>
/// <remarks>
/// The search is Wing and Gong's, with Lowe's just-in-time refinement and memoisation (the scheme Knossos and
/// Porcupine use): walk the call/return events in time order; at a call, try to linearize that operation now (the
/// model must accept its output) and restart from the first remaining event; at a return, the operation that
/// returns was not linearized before it, so undo the most recent choice. A (set of linearized operations, model
/// state) pair already explored is never explored again. An operation with an unknown outcome returns "at the end
/// of time": it may be linearized anywhere after its invocation, and placing it last is the same as "never".
/// </remarks>
public static class LinearizabilityChecker
{
    /// <summary>How many search steps one key may take before the verdict is "inconclusive".</summary>
    public const long DefaultStepBudget = 50_000_000;

    public static LinearizabilityResult Check(IEnumerable<KvOperation> history, long stepBudgetPerKey = DefaultStepBudget)
    {
        var checkedOps = 0;
        foreach (var group in history.Where(TakesPart).GroupBy(o => o.Key, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var ops = group.ToList();
            checkedOps += ops.Count;
            var search = new KeySearch(ops, stepBudgetPerKey);
            var verdict = search.Run();
            if (verdict != Verdict.Linearizable)
            {
                return new LinearizabilityResult(false, verdict == Verdict.OutOfBudget, group.Key, search.Explain(verdict), search.Slice(), checkedOps);
            }
        }

        return new LinearizabilityResult(true, false, null, string.Empty, [], checkedOps);
    }

    /// <summary>Failed operations had no effect; a read whose answer never came constrains nothing.</summary>
    private static bool TakesPart(KvOperation op) =>
        op.Outcome != KvOutcome.Failed && !(op.Kind == KvOpKind.Read && op.Outcome == KvOutcome.Unknown);

    /// <summary>
    /// The register model: applies <paramref name="op"/> to a key holding <paramref name="state"/> (null = absent);
    /// false when the output the client saw is impossible from that state.
    /// </summary>
    internal static bool Step(string? state, KvOperation op, out string? next)
    {
        next = state;
        switch (op.Kind)
        {
            case KvOpKind.Read:
                return string.Equals(state, op.Observed, StringComparison.Ordinal);
            case KvOpKind.Write:
                next = op.Value;
                return true;
            case KvOpKind.Delete:
                next = null;
                return true;
            default:
                var matches = string.Equals(state, op.Expected, StringComparison.Ordinal);
                if (matches)
                {
                    next = op.Value;
                }

                // An unknown cas did whatever the state at its linearization point made it do.
                return op.Outcome == KvOutcome.Unknown || op.Succeeded == matches;
        }
    }

    private enum Verdict
    {
        Linearizable,
        NotLinearizable,
        OutOfBudget,
    }

    /// <summary>The search over one key's operations.</summary>
    private sealed class KeySearch
    {
        private readonly List<KvOperation> _ops;
        private readonly long _budget;

        // Events as a doubly linked list over node indices: node 2i.. are sorted events; _head is the sentinel.
        private readonly int[] _opOf;
        private readonly bool[] _isCall;
        private readonly int[] _returnOf;
        private readonly int[] _next;
        private readonly int[] _prev;
        private readonly int _head;

        // The deepest partial linearization seen: for the report.
        private int _bestDepth = -1;
        private List<int> _bestTail = [];
        private string? _bestState;
        private int _blockedOp = -1;

        public KeySearch(List<KvOperation> ops, long budget)
        {
            _ops = ops;
            _budget = budget;
            var events = new List<(long Time, bool IsCall, int Op)>(2 * ops.Count);
            for (var i = 0; i < ops.Count; i++)
            {
                events.Add((ops[i].Invoked, true, i));
                events.Add((ops[i].Outcome == KvOutcome.Ok ? ops[i].Completed : long.MaxValue, false, i));
            }

            // On equal timestamps a call sorts before a return: the two operations count as concurrent (the lenient choice).
            events.Sort((a, b) => a.Time != b.Time ? a.Time.CompareTo(b.Time) : a.IsCall != b.IsCall ? (a.IsCall ? -1 : 1) : a.Op.CompareTo(b.Op));
            var n = events.Count;
            _head = n;
            _opOf = new int[n];
            _isCall = new bool[n];
            _returnOf = new int[n];
            _next = new int[n + 1];
            _prev = new int[n + 1];
            var returnNode = new int[ops.Count];
            for (var k = 0; k < n; k++)
            {
                _opOf[k] = events[k].Op;
                _isCall[k] = events[k].IsCall;
                if (!events[k].IsCall)
                {
                    returnNode[events[k].Op] = k;
                }
            }

            for (var k = 0; k < n; k++)
            {
                if (_isCall[k])
                {
                    _returnOf[k] = returnNode[_opOf[k]];
                }

                _next[k] = k + 1 < n ? k + 1 : -1;
                _prev[k] = k == 0 ? _head : k - 1;
            }

            _next[_head] = n > 0 ? 0 : -1;
            _prev[_head] = -1;
        }

        public Verdict Run()
        {
            var linearized = new ulong[(_ops.Count + 63) / 64];
            var seen = new HashSet<CacheKey>();
            var stack = new Stack<(int Call, string? StateBefore)>();
            string? state = null; // every key starts absent
            var entry = _next[_head];
            long steps = 0;
            while (_next[_head] != -1)
            {
                if (++steps > _budget)
                {
                    return Verdict.OutOfBudget;
                }

                if (_isCall[entry])
                {
                    var op = _opOf[entry];
                    if (Step(state, _ops[op], out var next))
                    {
                        linearized[op >> 6] |= 1UL << (op & 63);
                        if (seen.Add(new CacheKey(linearized, next)))
                        {
                            stack.Push((entry, state));
                            state = next;
                            Lift(entry);
                            entry = _next[_head];
                            continue;
                        }

                        linearized[op >> 6] &= ~(1UL << (op & 63));
                    }

                    entry = _next[entry];
                }
                else
                {
                    // The operation returning here was not linearized in time: note how far we got, then undo the last choice.
                    if (stack.Count > _bestDepth)
                    {
                        _bestDepth = stack.Count;
                        _bestTail = [.. stack.Take(10).Select(s => _opOf[s.Call]).Reverse()];
                        _bestState = state;
                        _blockedOp = _opOf[entry];
                    }

                    if (stack.Count == 0)
                    {
                        return Verdict.NotLinearizable;
                    }

                    var (call, before) = stack.Pop();
                    state = before;
                    var op = _opOf[call];
                    linearized[op >> 6] &= ~(1UL << (op & 63));
                    Unlift(call);
                    entry = _next[call];
                }
            }

            return Verdict.Linearizable;
        }

        public string Explain(Verdict verdict)
        {
            if (verdict == Verdict.OutOfBudget)
            {
                return $"search gave up after {_budget} steps over {_ops.Count} operations (too much concurrency on one key)";
            }

            var tail = string.Join(", ", _bestTail.Select(i => "#" + _ops[i].Id));
            return $"at most {_bestDepth} operations linearize; after [{tail}] the key holds {_bestState ?? "(absent)"}, " +
                $"and no order lets #{_ops[_blockedOp].Id} ({_ops[_blockedOp]}) take effect before it returned";
        }

        /// <summary>The last operations of the deepest partial linearization and every operation overlapping the one that got stuck.</summary>
        public List<KvOperation> Slice()
        {
            if (_blockedOp < 0)
            {
                return [.. _ops.OrderBy(o => o.Invoked).Take(30)];
            }

            var blocked = _ops[_blockedOp];
            var end = blocked.Outcome == KvOutcome.Ok ? blocked.Completed : long.MaxValue;
            var overlapping = _ops.Where(o => o.Invoked <= end && (o.Outcome != KvOutcome.Ok || o.Completed >= blocked.Invoked));
            return [.. _bestTail.Select(i => _ops[i]).Concat(overlapping).Distinct().OrderBy(o => o.Invoked).Take(40)];
        }

        private void Lift(int call)
        {
            _next[_prev[call]] = _next[call];
            _prev[_next[call]] = _prev[call]; // a call always has its return after it
            var ret = _returnOf[call];
            _next[_prev[ret]] = _next[ret];
            if (_next[ret] != -1)
            {
                _prev[_next[ret]] = _prev[ret];
            }
        }

        private void Unlift(int call)
        {
            var ret = _returnOf[call];
            _next[_prev[ret]] = ret;
            if (_next[ret] != -1)
            {
                _prev[_next[ret]] = ret;
            }

            _next[_prev[call]] = call;
            _prev[_next[call]] = call;
        }
    }

    /// <summary>A (linearized set, state) pair: the bitset is copied, so the key stays valid while the search goes on.</summary>
    private readonly struct CacheKey : IEquatable<CacheKey>
    {
        private readonly ulong[] _bits;
        private readonly string? _state;
        private readonly int _hash;

        public CacheKey(ulong[] bits, string? state)
        {
            _bits = (ulong[])bits.Clone();
            _state = state;
            var h = default(HashCode);
            foreach (var b in _bits)
            {
                h.Add(b);
            }

            h.Add(state, StringComparer.Ordinal);
            _hash = h.ToHashCode();
        }

        public bool Equals(CacheKey other) =>
            _hash == other._hash && string.Equals(_state, other._state, StringComparison.Ordinal) && _bits.AsSpan().SequenceEqual(other._bits);

        public override bool Equals(object? obj) => obj is CacheKey k && Equals(k);

        public override int GetHashCode() => _hash;
    }
}
