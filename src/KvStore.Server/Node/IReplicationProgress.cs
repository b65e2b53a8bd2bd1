namespace KvStore.Server.Node;

/// <summary>
/// What code beside the raft loop waits on: the leader, the applied index, any change of either. Every wait ends with
/// etcd's "server stopped" once the member stops, so a caller never outlives the loops it waits for.
/// </summary>
public interface IReplicationProgress
{
    /// <summary>This member's id.</summary>
    ulong MemberId { get; }

    /// <summary>The request timeout (etcd: 5 s + 2 × election timeout).</summary>
    TimeSpan RequestTimeout { get; }

    /// <summary>Waits until a leader is known (or the token fires).</summary>
    Task WaitForLeaderAsync(CancellationToken cancellationToken);

    /// <summary>Waits until this member has applied <paramref name="index"/>.</summary>
    Task WaitAppliedAsync(ulong index, CancellationToken cancellationToken);

    /// <summary>
    /// Raised on the apply loop after each applied batch of entries and each installed snapshot. A handler holds up the
    /// apply loop, so it must return at once: it is for a cheap check that decides whether to start work elsewhere.
    /// Awaiting <see cref="NextChangeAsync"/> instead costs a thread-pool hand-off at every apply.
    /// </summary>
    event Action Applied;

    /// <summary>Completes at the next apply or leader change (for waiting on conditions without polling).</summary>
    Task NextChangeAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Completes at the next change of this member's view of the leader or its own role (and when the member stops);
    /// take it before checking <see cref="NodeState.LeaderId"/>, so a change in between is not missed.
    /// </summary>
    Task NextLeaderChangeAsync();
}
