using KvStore.Raft;

namespace KvStore.Server.Replication;

/// <summary>
/// --initial-election-tick-advance, as etcd's adjustTicks: a member of a multi-member cluster that has streams to more
/// than one peer fast-forwards its election timer by two ticks less than the election timeout, so a fresh cluster
/// elects its first leader soon after its members are connected instead of a whole election timeout later. The two
/// ticks held back are for a leader's first heartbeat: a member that rejoins a cluster with a live leader hears from it
/// before its timer runs out and starts no election. A one-member cluster needs none of this: its only voter
/// campaigns as soon as its membership is applied (see <see cref="CampaignIfSoleVoter"/>).
/// </summary>
public sealed partial class RaftHost
{
    /// <summary>How long to wait for peer streams before giving up on the advance (etcd: rafthttp's ConnReadTimeout).</summary>
    private static readonly TimeSpan PeerConnectionWait = TimeSpan.FromSeconds(5);

    private int _ticksAdvanced;
    private long _ticksAtAdvance = -1;
    private long _ticksAtFirstLeader = -1;

    /// <summary>Election ticks fast-forwarded at start (0 when none were); for tests.</summary>
    internal int TicksAdvanced => Volatile.Read(ref _ticksAdvanced);

    /// <summary>Host ticks counted when the advance was made (-1: not made); for tests.</summary>
    internal long TicksAtAdvance => Interlocked.Read(ref _ticksAtAdvance);

    /// <summary>Host ticks counted when this member first learned of a leader (-1: not yet); for tests.</summary>
    internal long TicksAtFirstLeader => Interlocked.Read(ref _ticksAtFirstLeader);

    /// <summary>
    /// Waits (at most <see cref="PeerConnectionWait"/>) until streams to more than one peer are acknowledged, then asks
    /// the raft loop to advance the election timer by electionTick - 2 ticks. Like etcd, it counts peers with a live
    /// stream, so a two-member cluster never advances; and it does nothing when no peers answer in time.
    /// </summary>
    private async Task AdvanceElectionTicksAsync(int electionTick, int members, long heartbeatMs)
    {
        if (members <= 1 || _transport is null)
        {
            return;
        }

        if (!_options.InitialElectionTickAdvance)
        {
            EtcdLog.Info(_logger, "skipping initial election tick advance", ("election-ticks", electionTick));
            return;
        }

        EtcdLog.Info(_logger, "starting initial election tick advance", ("election-ticks", electionTick));
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        wait.CancelAfter(PeerConnectionWait);
        try
        {
            while (true)
            {
                // Subscribe before counting, so a stream acknowledged in between still wakes us.
                var next = _transport.NextPeerActive;
                var active = _transport.ActivePeers;
                if (active > 1)
                {
                    var ticks = electionTick - 2;
                    EtcdLog.Info(
                        _logger,
                        "initialized peer connections; fast-forwarding election ticks",
                        ("local-member-id", EtcdLog.Id(_identity.MemberId)),
                        ("forward-ticks", ticks),
                        ("forward-duration", EtcdLog.Duration(TimeSpan.FromMilliseconds(ticks * heartbeatMs))),
                        ("election-ticks", electionTick),
                        ("election-timeout", EtcdLog.Duration(TimeSpan.FromMilliseconds(electionTick * heartbeatMs))),
                        ("active-remote-members", active));
                    _inbox.Writer.TryWrite(InboxItem.TickAdvance(ticks));
                    return;
                }

                await next.WaitAsync(wait.Token);
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping, or no peer streams within the wait: advancing now could only hurry a member that is alone.
        }
    }

    /// <summary>In the raft loop: the advance itself, the only place the core's timer is fast-forwarded.</summary>
    private void AdvanceTicks(RaftNode node, int ticks)
    {
        node.AdvanceTicks(ticks);
        Interlocked.Exchange(ref _ticksAtAdvance, _ticks);
        Volatile.Write(ref _ticksAdvanced, ticks);
    }

    /// <summary>Records the tick count at the first leader this member learns of (raft loop).</summary>
    private void NoteFirstLeader()
    {
        if (Interlocked.Read(ref _ticksAtFirstLeader) < 0)
        {
            Interlocked.Exchange(ref _ticksAtFirstLeader, _ticks);
        }
    }
}
