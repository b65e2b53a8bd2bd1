using System.Runtime.CompilerServices;
using KvStore.Raft.Log;
using KvStore.Raft.ReadIndex;
using KvStore.Raft.Storage;
using KvStore.Raft.Tracker;

namespace KvStore.Raft;

/// <summary>
/// One Raft member as a pure state machine. Feed it <see cref="Tick"/>s (the caller decides how long a tick is),
/// peer messages through <see cref="Step"/> and client requests (<see cref="Propose"/>, <see cref="ReadIndex"/>,
/// <see cref="ProposeConfChange"/>, <see cref="TransferLeadership"/>); collect its work with
/// <see cref="GetReady"/> and acknowledge it with <see cref="Advance"/> (see <see cref="Ready"/> for the order).
/// Not thread-safe: drive it from one loop. It does no I/O, reads no clock and draws randomness only from
/// <see cref="RaftConfig.Random"/>.
/// </summary>
public sealed partial class RaftNode
{
    /// <summary>Context marking votes of a leadership transfer, which bypass followers' leader lease.</summary>
    private static readonly byte[] TransferContext = "kvstore-raft-transfer"u8.ToArray();

    private readonly RaftConfig _config;
    private readonly RaftLog _log;
    private readonly ProgressTracker _tracker;
    private readonly ReadOnlyQueue _readOnly = new();
    private readonly List<Message> _pendingReadIndex = [];
    private readonly IRaftRandom _random;
    private readonly IRaftLogger? _logger;
    private List<Message> _msgs = [];
    private List<ReadState> _readStates = [];

    private ulong _term;
    private ulong _vote;
    private ulong _lead;
    private ulong _leadTransferee;
    private ulong _pendingConfIndex;
    private RaftRole _role;
    private int _electionElapsed;
    private int _heartbeatElapsed;
    private int _randomizedElectionTimeout;
    private Action<Message> _step;
    private Action _tick;

    private SoftState _prevSoftState;
    private HardState _prevHardState;
    private bool _readyOutstanding;

    /// <summary>
    /// Starts (or restarts) a member from what <see cref="RaftConfig.Storage"/> holds. After a restart, committed
    /// entries are handed out again from the snapshot index on: the application skips those it already applied
    /// (by its consistent index), while the core re-applies conf changes to rebuild the membership.
    /// </summary>
    public RaftNode(RaftConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        _config = config;
        _logger = config.Logger;
        _random = config.Random ?? new SeededRaftRandom(config.Id);
        _log = new RaftLog(config.Storage, config.MaxCommittedSizePerReady, Panic);
        _tracker = new ProgressTracker(config.MaxInflightMsgs);

        var (hs, cs) = config.Storage.InitialState();
        if (hs.IsEmpty && cs.IsEmpty && config.Storage.LastIndex() == 0 && config.BootstrapVoters.Count > 0)
        {
            hs = Bootstrap(config.BootstrapVoters);
        }
        else
        {
            _prevHardState = hs;
        }

        _tracker.Reset(cs, _log.LastIndex() + 1);
        if (!hs.IsEmpty)
        {
            if (hs.Commit < _log.Committed || hs.Commit > _log.LastIndex())
            {
                Panic($"raft: {Id} state.commit {hs.Commit} is out of range [{_log.Committed}, {_log.LastIndex()}]");
            }

            _log.CommitTo(hs.Commit);
            _term = hs.Term;
            _vote = hs.Vote;
        }

        _step = StepFollower;
        _tick = TickElection;
        BecomeFollower(_term, 0);
        _prevSoftState = SoftState;
        LogInfo($"raft: {Id} started term={_term} commit={_log.Committed} applied={_log.Applied} last={_log.LastIndex()}/{_log.LastTerm()} {_tracker.ConfState()}");
    }

    /// <summary>This member's id.</summary>
    public ulong Id => _config.Id;

    /// <summary>Current term.</summary>
    public ulong Term => _term;

    /// <summary>Vote cast in the current term (0: none).</summary>
    public ulong Vote => _vote;

    /// <summary>Known leader (0: none).</summary>
    public ulong Leader => _lead;

    /// <summary>Current role.</summary>
    public RaftRole Role => _role;

    /// <summary>Highest committed index known here.</summary>
    public ulong CommitIndex => _log.Committed;

    /// <summary>Highest index handed to the application and acknowledged by <see cref="Advance"/>.</summary>
    public ulong AppliedIndex => _log.Applied;

    /// <summary>Index of the last entry (stable or not).</summary>
    public ulong LastIndex => _log.LastIndex();

    /// <summary>The membership as of <see cref="AppliedIndex"/> (what a snapshot taken now must record).</summary>
    public ConfState ConfState => _tracker.ConfState();

    /// <summary>True when this member is a voter and may campaign.</summary>
    public bool IsPromotable => _tracker.IsVoter(Id);

    /// <summary>Id of the member leadership is being transferred to (0: none).</summary>
    public ulong LeadTransferee => _leadTransferee;

    /// <summary>Leader and role.</summary>
    public SoftState SoftState => new(_lead, _role);

    /// <summary>Term, vote and commit.</summary>
    public HardState HardState => new(_term, _vote, _log.Committed);

    /// <summary>Test-only knob: commit by counting replicas of entries of earlier terms too (unsafe, Raft figure 8).</summary>
    internal bool DisableCurrentTermCommitRule { get; set; }

    /// <summary>Advances logical time by one tick: followers may campaign, leaders send heartbeats and check quorum.</summary>
    public void Tick() => _tick();

    /// <summary>
    /// Fast-forwards logical time by <paramref name="ticks"/> ticks, with exactly the effect of that many
    /// <see cref="Tick"/> calls (etcd's advanceTicks). A host uses it once at start so that a fresh member does not
    /// wait out a whole election timeout before its first election; how far to advance, and when, is the host's choice.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ticks"/> is negative.</exception>
    public void AdvanceTicks(int ticks)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ticks);
        for (var i = 0; i < ticks; i++)
        {
            _tick();
        }
    }

    /// <summary>Starts an election now (pre-vote first when enabled), if this member is a voter.</summary>
    public void Campaign() => Hup(transfer: false);

    /// <summary>
    /// Processes a message from a peer. Local-only kinds are ignored. Messages of older terms are answered or
    /// dropped as Raft requires; the node never throws for a message a faulty network could produce.
    /// </summary>
    public void Step(Message message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (IsLocal(message.Type))
        {
            return;
        }

        StepInternal(message);
    }

    /// <summary>Proposes application data. Accepted on the leader, forwarded by a follower that knows one.</summary>
    public RequestResult Propose(ReadOnlyMemory<byte> data) => ProposeEntry(new Entry { Type = EntryType.Normal, Data = data });

    /// <summary>
    /// Proposes a single-step membership change. Only one may be pending: the leader refuses a new one until the
    /// previous one is applied. It takes effect on each member when its entry is applied (in <see cref="Advance"/>).
    /// </summary>
    public RequestResult ProposeConfChange(ConfChange change)
    {
        ArgumentNullException.ThrowIfNull(change);
        return ProposeEntry(new Entry { Type = EntryType.ConfChange, Data = change.Encode() });
    }

    /// <summary>
    /// Requests a linearizable read identified by <paramref name="context"/> (unique per request). A
    /// <see cref="ReadState"/> with the same context appears in a later Ready once leadership is confirmed; it may
    /// never appear if leadership changes, so the caller needs a timeout.
    /// </summary>
    public RequestResult ReadIndex(ReadOnlyMemory<byte> context)
    {
        var m = new Message { Type = MessageType.ReadIndex, Context = context };
        switch (_role)
        {
            case RaftRole.Leader:
                LeaderReadIndex(m);
                return RequestResult.Accepted;
            case RaftRole.Follower when _lead != 0:
                m.To = _lead;
                Send(m);
                return RequestResult.Forwarded;
            default:
                return RequestResult.NoLeader;
        }
    }

    /// <summary>
    /// Asks the leader to hand leadership to voter <paramref name="transferee"/>: it first brings the transferee up
    /// to date, then tells it to campaign at once. Proposals are refused meanwhile; the transfer is abandoned after an
    /// election timeout.
    /// </summary>
    public RequestResult TransferLeadership(ulong transferee)
    {
        var m = new Message { Type = MessageType.TransferLeader, From = transferee };
        switch (_role)
        {
            case RaftRole.Leader:
                if (!_tracker.IsVoter(transferee))
                {
                    return RequestResult.InvalidConfChange;
                }

                StepLeader(m);
                return RequestResult.Accepted;
            case RaftRole.Follower when _lead != 0:
                m.To = _lead;
                Send(m);
                return RequestResult.Forwarded;
            default:
                return RequestResult.NoLeader;
        }
    }

    /// <summary>Transport hook: <paramref name="id"/> could not be reached; the leader stops pipelining to it.</summary>
    public void ReportUnreachable(ulong id)
    {
        if (_role == RaftRole.Leader)
        {
            StepLeader(new Message { Type = MessageType.Unreachable, From = id });
        }
    }

    /// <summary>Transport hook: outcome of sending a snapshot to <paramref name="id"/>.</summary>
    public void ReportSnapshot(ulong id, SnapshotStatus status)
    {
        if (_role == RaftRole.Leader)
        {
            StepLeader(new Message { Type = MessageType.SnapStatus, From = id, Reject = status == SnapshotStatus.Failure });
        }
    }

    /// <summary>Term of the entry at <paramref name="index"/>, or 0 when compacted or missing (tests).</summary>
    internal ulong TermAt(ulong index) => _log.TermOrZero(index);

    /// <summary>First retained index (tests).</summary>
    internal ulong FirstIndex => _log.FirstIndex();

    /// <summary>The leader's progress view (tests).</summary>
    internal string? ProgressOf(ulong id) => _tracker.Progress.TryGetValue(id, out var p) ? p.ToString() : null;

    internal bool HasLogger => _logger is not null;

    internal ulong MatchOf(ulong id) => _tracker.Progress.TryGetValue(id, out var p) ? p.Match : 0;

    /// <summary>
    /// On the leader: the highest index known to be replicated on member <paramref name="id"/> (its match index);
    /// 0 when this member is not the leader or does not track <paramref name="id"/>. Used for learner promotion checks.
    /// </summary>
    public ulong ReplicatedIndexOf(ulong id) => _role == RaftRole.Leader ? MatchOf(id) : 0;

    private static bool IsLocal(MessageType t) =>
        t is MessageType.Hup or MessageType.Beat or MessageType.Unreachable or MessageType.SnapStatus or MessageType.CheckQuorum;

    private RequestResult ProposeEntry(Entry entry)
    {
        switch (_role)
        {
            case RaftRole.Leader:
                return LeaderPropose([entry]);
            case RaftRole.Follower when _lead != 0:
                Send(new Message { Type = MessageType.Prop, To = _lead, Entries = [entry] });
                return RequestResult.Forwarded;
            default:
                return RequestResult.NoLeader;
        }
    }

    private void Send(Message m)
    {
        if (m.From == 0)
        {
            m.From = Id;
        }

        if (m.Type is MessageType.Vote or MessageType.VoteResp or MessageType.PreVote or MessageType.PreVoteResp)
        {
            if (m.Term == 0)
            {
                Panic($"raft: term should be set when sending {m.Type}");
            }
        }
        else if (m.Type is not (MessageType.Prop or MessageType.ReadIndex or MessageType.TransferLeader))
        {
            // Proposals, reads and transfer requests travel without a term: they are requests, not Raft RPCs.
            m.Term = _term;
        }

        _msgs.Add(m);
    }

    private void LogInfo([InterpolatedStringHandlerArgument("")] ref RaftLogHandler message)
    {
        if (_logger is not null)
        {
            _logger.Info(message.ToStringAndClear());
        }
    }

    private void Panic(string message)
    {
        _logger?.Panic(message);
        throw new RaftInvariantException(message);
    }
}
