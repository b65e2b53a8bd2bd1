using KvStore.Server.Node;

namespace KvStore.Server.Replication;

/// <summary>
/// Lets callers wait for this member's progress without polling: the applied index moving and the leader (or this
/// member's role) changing. The loops signal; anyone awaits. Each signal is a one-shot task replaced when it fires, so a
/// waiter takes the current one, checks its condition, and awaits it only if the condition does not hold yet. Once the
/// member stops, every wait ends with etcd's "server stopped".
/// </summary>
internal sealed class ProgressSignals(NodeState state)
{
    private TaskCompletionSource _applied = NewSignal();
    private TaskCompletionSource _leader = NewSignal();
    private volatile bool _stopped;

    /// <summary>True once <see cref="Stop"/> was called.</summary>
    public bool IsStopped => _stopped;

    /// <summary>Run on the apply loop by <see cref="Applied"/>; see <see cref="IReplicationProgress.Applied"/>.</summary>
    public event Action? AppliedHandlers;

    /// <summary>The apply loop moved the applied index (or installed a snapshot).</summary>
    public void Applied()
    {
        Fire(ref _applied);
        AppliedHandlers?.Invoke();
    }

    /// <summary>The raft loop saw a new leader or role.</summary>
    public void LeaderChanged() => Fire(ref _leader);

    /// <summary>Ends every wait with "server stopped": the loops have ended (stopped or failed).</summary>
    public void Stop()
    {
        _stopped = true;
        Fire(ref _applied);
        Fire(ref _leader);
    }

    /// <summary>Completes at the next apply or leader change.</summary>
    public Task NextChangeAsync(CancellationToken cancellationToken) =>
        Task.WhenAny(Volatile.Read(ref _applied).Task, Volatile.Read(ref _leader).Task).WaitAsync(cancellationToken);

    /// <summary>Completes at the next leader or role change (and when the member stops).</summary>
    public Task NextLeaderChangeAsync() => Volatile.Read(ref _leader).Task;

    /// <summary>Waits until a leader is known.</summary>
    public Task WaitForLeaderAsync(CancellationToken cancellationToken) =>
        WaitUntilAsync(static (s, _) => s.HasLeader, 0, onLeader: true, cancellationToken);

    /// <summary>Waits until <paramref name="leader"/> leads (a leadership transfer).</summary>
    public Task WaitForLeaderAsync(ulong leader, CancellationToken cancellationToken) =>
        WaitUntilAsync(static (s, id) => s.LeaderId == id, leader, onLeader: true, cancellationToken);

    /// <summary>Waits until this member has applied <paramref name="index"/>.</summary>
    public Task WaitAppliedAsync(ulong index, CancellationToken cancellationToken) =>
        WaitUntilAsync(static (s, i) => s.AppliedIndex >= i, index, onLeader: false, cancellationToken);

    private async Task WaitUntilAsync(Func<NodeState, ulong, bool> done, ulong argument, bool onLeader, CancellationToken cancellationToken)
    {
        while (!done(state, argument))
        {
            // Take the signal before checking again, so a change in between is not missed.
            var signal = onLeader ? Volatile.Read(ref _leader) : Volatile.Read(ref _applied);
            if (done(state, argument))
            {
                return;
            }

            ThrowIfStopped();
            await signal.Task.WaitAsync(cancellationToken);
        }
    }

    private void ThrowIfStopped()
    {
        if (_stopped)
        {
            throw EtcdErrors.Stopped.Exception();
        }
    }

    private static void Fire(ref TaskCompletionSource signal) => Interlocked.Exchange(ref signal, NewSignal()).TrySetResult();

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
