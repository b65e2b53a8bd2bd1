using System.Collections.Concurrent;
using Google.Protobuf;
using KvStore.Internal;

namespace KvStore.Server.Replication;

/// <summary>
/// A proposal of this member: what the raft loop proposes (<see cref="Data"/>, <see cref="Request"/> encoded) and what
/// the caller awaits. Neither the request nor the data is changed once proposed.
/// </summary>
internal sealed class Proposal(ulong id, InternalRequest request, byte[] data)
    : TaskCompletionSource<IMessage>(TaskCreationOptions.RunContinuationsAsynchronously)
{
    public ulong Id { get; } = id;

    public InternalRequest Request { get; } = request;

    public byte[] Data { get; } = data;
}

/// <summary>
/// The requests of this member that wait for their entry to be applied, by request id: ordinary proposals and
/// membership changes. Callers add and forget theirs (a caller that gives up forgets its id, so the raft loop skips it);
/// the apply loop takes the one its entry answers. Safe to use from any thread.
/// </summary>
internal sealed class PendingRequests
{
    private readonly ConcurrentDictionary<ulong, Proposal> _proposals = new();
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource> _confChanges = new();

    /// <summary>Registers a proposal under <paramref name="id"/> (the id already set in <paramref name="request"/>).</summary>
    public Proposal Add(ulong id, InternalRequest request, byte[] data)
    {
        var proposal = new Proposal(id, request, data);
        _proposals[id] = proposal;
        return proposal;
    }

    /// <summary>True while the caller of proposal <paramref name="id"/> still waits for it.</summary>
    public bool IsWaiting(ulong id) => _proposals.ContainsKey(id);

    /// <summary>The waiting proposal <paramref name="id"/>, left in place (null when there is none).</summary>
    public Proposal? Find(ulong id) => _proposals.TryGetValue(id, out var proposal) ? proposal : null;

    /// <summary>Removes proposal <paramref name="id"/> and returns it, if it still waits; the caller completes it.</summary>
    public bool TryTake(ulong id, out Proposal proposal) => _proposals.TryRemove(id, out proposal!);

    /// <summary>Drops proposal <paramref name="id"/> (its caller gave up).</summary>
    public void Forget(ulong id) => _proposals.TryRemove(id, out _);

    /// <summary>Registers a membership change under <paramref name="id"/>; the task completes when it is applied here.</summary>
    public TaskCompletionSource AddConfChange(ulong id)
    {
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _confChanges[id] = waiter;
        return waiter;
    }

    /// <summary>Completes membership change <paramref name="id"/>; false when nobody waits for it.</summary>
    public bool CompleteConfChange(ulong id) => _confChanges.TryRemove(id, out var waiter) && waiter.TrySetResult();

    /// <summary>Drops membership change <paramref name="id"/> (its caller is done or gave up).</summary>
    public void ForgetConfChange(ulong id) => _confChanges.TryRemove(id, out _);

    /// <summary>Fails every waiting request with <paramref name="error"/> (the member stops).</summary>
    public void FailAll(EtcdError error)
    {
        foreach (var id in _proposals.Keys)
        {
            if (_proposals.TryRemove(id, out var proposal))
            {
                proposal.TrySetException(error.Exception());
            }
        }

        foreach (var id in _confChanges.Keys)
        {
            if (_confChanges.TryRemove(id, out var waiter))
            {
                waiter.TrySetException(error.Exception());
            }
        }
    }
}
