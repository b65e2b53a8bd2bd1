using KvStore.Raft.Storage;

namespace KvStore.Raft.Tests.Simulation;

/// <summary>Settings of a simulated cluster.</summary>
internal sealed record SimOptions
{
    public int ElectionTick { get; init; } = 6;

    public int HeartbeatTick { get; init; } = 1;

    public bool PreVote { get; init; } = true;

    public bool CheckQuorum { get; init; } = true;

    public ulong MaxSizePerMsg { get; init; } = 1024 * 1024;

    public int MaxInflight { get; init; } = 16;

    /// <summary>Members that join later through conf changes (ids after the initial ones).</summary>
    public int Spares { get; init; }

    public bool DisableCurrentTermCommitRule { get; init; }

    public ulong Seed { get; init; } = 1;
}

/// <summary>
/// An in-process cluster: members, an unreliable network of in-flight messages and a Ready loop that follows the
/// contract exactly (persist, send, apply, advance). Deterministic: every choice comes from the caller.
/// </summary>
internal sealed class SimCluster
{
    private readonly SimOptions _options;
    private readonly HashSet<(ulong, ulong)> _cut = [];
    private readonly Action<string>? _trace;
    private long _nextReadId;

    public SimCluster(int size, SimOptions options, Action<string>? trace = null)
    {
        _options = options;
        _trace = trace;
        for (var i = 1; i <= size + options.Spares; i++)
        {
            Members[(ulong)i] = new SimMember((ulong)i, i <= size);
        }

        InitialIds = Members.Keys.Where(id => id <= (ulong)size).ToList();
        foreach (var m in Members.Values)
        {
            Start(m);
        }
    }

    public SortedDictionary<ulong, SimMember> Members { get; } = [];

    public IReadOnlyList<ulong> InitialIds { get; }

    /// <summary>Messages sent and not yet delivered or dropped, oldest first.</summary>
    public List<Message> InFlight { get; } = [];

    public SafetyChecker Checker { get; } = new();

    /// <summary>Every read state released so far, by member.</summary>
    public List<(ulong Member, ReadState State)> Reads { get; } = [];

    public RaftNode Node(ulong id) => Members[id].Node ?? throw new InvalidOperationException($"member {id} is down");

    public IEnumerable<SimMember> Up => Members.Values.Where(m => m.IsUp);

    public void Trace(string line) => _trace?.Invoke(line);

    // ---- faults -------------------------------------------------------------------------------------------

    public bool IsCut(ulong from, ulong to) => _cut.Contains((from, to));

    public void Cut(ulong a, ulong b)
    {
        _cut.Add((a, b));
        _cut.Add((b, a));
    }

    public void Isolate(ulong id)
    {
        foreach (var other in Members.Keys.Where(o => o != id))
        {
            Cut(id, other);
        }
    }

    public void Partition(IReadOnlyCollection<ulong> side)
    {
        foreach (var a in side)
        {
            foreach (var b in Members.Keys.Where(b => !side.Contains(b)))
            {
                Cut(a, b);
            }
        }

        Trace($"partition [{string.Join(',', side)}] | [{string.Join(',', Members.Keys.Where(b => !side.Contains(b)))}]");
    }

    public void Heal()
    {
        _cut.Clear();
        Trace("heal");
    }

    /// <summary>Kills a member: everything not persisted through a Ready is lost.</summary>
    public void Crash(ulong id)
    {
        var m = Members[id];
        if (m.Node is null)
        {
            return;
        }

        m.Node = null;
        Trace($"crash {id}");
    }

    public void Restart(ulong id)
    {
        var m = Members[id];
        if (m.Node is not null)
        {
            return;
        }

        m.Incarnation++;
        Start(m);
        Trace($"restart {id} (incarnation {m.Incarnation}) term={m.Node!.Term} commit={m.Node.CommitIndex} last={m.Node.LastIndex}");
    }

    private void Start(SimMember m)
    {
        var config = new RaftConfig
        {
            Id = m.Id,
            Storage = m.Storage,
            ElectionTick = _options.ElectionTick,
            HeartbeatTick = _options.HeartbeatTick,
            PreVote = _options.PreVote,
            CheckQuorum = _options.CheckQuorum,
            MaxSizePerMsg = _options.MaxSizePerMsg,
            MaxInflightMsgs = _options.MaxInflight,
            BootstrapVoters = m.Initial ? InitialIds : [],
            Random = new SeededRaftRandom((_options.Seed * 7919) + (m.Id * 131) + (ulong)m.Incarnation),
            Logger = _trace is null ? null : new TraceLogger(_trace),
        };
        m.Node = new RaftNode(config) { DisableCurrentTermCommitRule = _options.DisableCurrentTermCommitRule };

        // The state machine is recovered from the last snapshot; later entries are applied again.
        m.Storage.Snapshot(out var snap);
        m.SmApplied = snap.Metadata.Index;
        m.SmChain = snap.IsEmpty ? 0 : ChainHash.Decode(snap.Data);
        m.ObservedCommit = 0;
    }

    // ---- the Ready loop -----------------------------------------------------------------------------------

    /// <summary>Handles one Ready of member <paramref name="id"/>; with <paramref name="crashAfterPersist"/> the member dies right after persisting.</summary>
    public bool ProcessReady(ulong id, bool crashAfterPersist = false)
    {
        var m = Members[id];
        var node = m.Node;
        if (node is null || !node.HasReady())
        {
            return false;
        }

        var rd = node.GetReady();

        // 1. persist
        if (rd.Snapshot is not null)
        {
            m.Storage.ApplySnapshot(rd.Snapshot);
            m.LogChain.Clear();
            m.LogChain.Add(ChainHash.Decode(rd.Snapshot.Data));
            m.LogChainBase = rd.Snapshot.Metadata.Index;
            Checker.Persisted(id, rd.Snapshot.Metadata.Index, rd.Snapshot.Metadata.Term, m.LogChain[0]);
        }

        if (rd.Entries.Count > 0)
        {
            m.Storage.Append(rd.Entries);
            foreach (var e in rd.Entries)
            {
                if (e.Index <= m.LogChainBase)
                {
                    continue;
                }

                var k = (int)(e.Index - m.LogChainBase);
                m.LogChain.RemoveRange(k, m.LogChain.Count - k);
                m.LogChain.Add(ChainHash.Next(m.LogChain[k - 1], e));
                Checker.Persisted(id, e.Index, e.Term, m.LogChain[k]);
            }
        }

        if (rd.HardState is { } hs)
        {
            m.Storage.SetHardState(hs);
        }

        if (crashAfterPersist)
        {
            Crash(id);
            return true;
        }

        // 2. send
        foreach (var msg in rd.Messages)
        {
            if (Members.ContainsKey(msg.To))
            {
                InFlight.Add(msg);
            }
        }

        // 3. apply
        if (rd.Snapshot is not null)
        {
            var chain = ChainHash.Decode(rd.Snapshot.Data);
            Checker.Applied(id, rd.Snapshot.Metadata.Index, chain, "installed a snapshot with");
            m.SmApplied = rd.Snapshot.Metadata.Index;
            m.SmChain = chain;
        }

        foreach (var e in rd.CommittedEntries)
        {
            if (e.Index != m.SmApplied + 1)
            {
                Checker.Fail($"Apply order: member {id} was handed entry {e.Index} after applying {m.SmApplied}");
                break;
            }

            m.SmChain = ChainHash.Next(m.SmChain, e);
            m.SmApplied = e.Index;
            Checker.Applied(id, e.Index, m.SmChain, "applied");
        }

        foreach (var rs in rd.ReadStates)
        {
            Checker.ReadReleased(id, rs);
            Reads.Add((id, rs));
        }

        if (_trace is not null && (rd.SoftState is not null || rd.CommittedEntries.Count > 0 || rd.Snapshot is not null))
        {
            Trace($"ready {id}: {(rd.SoftState is { } ss ? $"{ss.Role} lead={ss.Leader} " : string.Empty)}term={node.Term} persisted={rd.Entries.Count} applied->{m.SmApplied}{(rd.Snapshot is null ? string.Empty : $" snapshot {rd.Snapshot}")}");
        }

        // 4. advance
        node.Advance(rd);
        return true;
    }

    public void ProcessAllReady()
    {
        foreach (var id in Members.Keys)
        {
            ProcessReady(id);
        }
    }

    // ---- the network --------------------------------------------------------------------------------------

    /// <summary>Delivers (or drops, when the path is cut or the recipient is down) the in-flight message at <paramref name="index"/>.</summary>
    public void Deliver(int index, bool duplicate = false)
    {
        var msg = InFlight[index];
        if (!duplicate)
        {
            InFlight.RemoveAt(index);
        }

        var to = Members[msg.To];
        if (to.Node is null || IsCut(msg.From, msg.To))
        {
            NotDelivered(msg);
            return;
        }

        _trace?.Invoke($"  deliver {msg}");
        to.Node.Step(msg);
        if (msg.Type == MessageType.Snap)
        {
            Members[msg.From].Node?.ReportSnapshot(msg.To, SnapshotStatus.Finish);
        }
    }

    public void Drop(int index)
    {
        var msg = InFlight[index];
        InFlight.RemoveAt(index);
        NotDelivered(msg);
    }

    private void NotDelivered(Message msg)
    {
        _trace?.Invoke($"  drop {msg}");
        var from = Members[msg.From].Node;
        if (from is null)
        {
            return;
        }

        if (msg.Type == MessageType.Snap)
        {
            from.ReportSnapshot(msg.To, SnapshotStatus.Failure);
        }
        else if (msg.Type == MessageType.App)
        {
            from.ReportUnreachable(msg.To);
        }
    }

    /// <summary>Runs Ready handling and delivery (dropping what <paramref name="drop"/> selects) until nothing moves.</summary>
    public void Stabilize(Func<Message, bool>? drop = null, int maxRounds = 10_000)
    {
        for (var round = 0; round < maxRounds; round++)
        {
            ProcessAllReady();
            if (InFlight.Count == 0)
            {
                if (!Up.Any(m => m.Node!.HasReady()))
                {
                    return;
                }

                continue;
            }

            while (InFlight.Count > 0)
            {
                if (drop is not null && drop(InFlight[0]))
                {
                    Drop(0);
                }
                else
                {
                    Deliver(0);
                }
            }

            ObserveAll();
        }

        throw new InvalidOperationException("cluster did not stabilize");
    }

    public void TickAll(int ticks = 1)
    {
        for (var i = 0; i < ticks; i++)
        {
            foreach (var m in Up)
            {
                m.Node!.Tick();
            }
        }
    }

    /// <summary>Ticks everyone and stabilizes after each tick, <paramref name="ticks"/> times.</summary>
    public void Run(int ticks, Func<Message, bool>? drop = null)
    {
        for (var i = 0; i < ticks; i++)
        {
            TickAll();
            Stabilize(drop);
        }
    }

    public void ObserveAll()
    {
        foreach (var m in Up)
        {
            Checker.Observe(m);
        }
    }

    // ---- requests -----------------------------------------------------------------------------------------

    public ulong? Leader()
    {
        var leaders = Up.Where(m => m.Node!.Role == RaftRole.Leader).OrderByDescending(m => m.Node!.Term).ToList();
        return leaders.Count == 0 ? null : leaders[0].Id;
    }

    private long _nextProposal;

    public RequestResult Propose(ulong via, out byte[] data)
    {
        data = BitConverter.GetBytes(++_nextProposal);
        var r = Node(via).Propose(data);
        Trace($"propose #{_nextProposal} via {via}: {r}");
        return r;
    }

    public RequestResult ReadIndex(ulong via) => ReadIndex(via, out _);

    public RequestResult ReadIndex(ulong via, out byte[] ctx)
    {
        ctx = BitConverter.GetBytes(++_nextReadId);
        var r = Node(via).ReadIndex(ctx);
        if (r is RequestResult.Accepted or RequestResult.Forwarded)
        {
            Checker.ReadIssued(ctx);
        }

        Trace($"read #{_nextReadId} via {via}: {r}");
        return r;
    }

    /// <summary>The application's compaction: snapshot the state machine at its applied index and drop the log before it.</summary>
    public void Compact(ulong id)
    {
        var m = Members[id];
        var node = m.Node;
        if (node is null || m.SmApplied <= m.Storage.FirstIndex())
        {
            return;
        }

        var applied = node.AppliedIndex;
        if (applied != m.SmApplied)
        {
            Checker.Fail($"member {id}: node applied {applied} but state machine at {m.SmApplied}");
            return;
        }

        m.Storage.CreateSnapshot(applied, node.ConfState, ChainHash.Encode(m.SmChain));
        m.Storage.Compact(applied);
        Trace($"compact {id} at {applied} {node.ConfState}");
    }

    /// <summary>True when a proposal with <paramref name="data"/> was applied by <paramref name="id"/>'s state machine.</summary>
    public bool HasApplied(ulong id, ulong index) => Members[id].SmApplied >= index;

    private sealed class TraceLogger(Action<string> trace) : IRaftLogger
    {
        public void Info(string message) => trace("    " + message);

        public void Panic(string message) => trace("    PANIC " + message);
    }
}
