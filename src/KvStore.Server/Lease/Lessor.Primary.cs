using Etcdserverpb;
using Google.Protobuf;
using KvStore.Storage;

namespace KvStore.Server.Lease;

/// <summary>The leader-only half of the lessor: deadlines, renewals, expiry, and the read-side queries.</summary>
public sealed partial class Lessor
{
    /// <summary>
    /// Brings the lessor in line with raft leadership: promoted when this member leads, demoted when it does not.
    /// The expiry loop calls it on every check; requests that need the leader's lessor call it too, so a keep-alive
    /// right after an election does not fail with "not leader" until the next check.
    /// </summary>
    public void FollowLeadership(bool isLeader, TimeSpan promoteExtension)
    {
        if (isLeader)
        {
            lock (_lock)
            {
                if (!_primary)
                {
                    Promote(promoteExtension);
                }
            }
        }
        else
        {
            Demote();
        }
    }

    /// <summary>
    /// This member became leader: every lease gets a deadline of now + its (checkpointed or full) TTL + extension,
    /// so leases never expire because of the election itself (etcd's Promote).
    /// </summary>
    public void Promote(TimeSpan extension)
    {
        lock (_lock)
        {
            _primary = true;
            var now = Now;
            foreach (var lease in _leases.Values)
            {
                var ttl = lease.RemainingTtl > 0 ? lease.RemainingTtl : lease.Ttl;
                lease.Expiry = now + extension + TimeSpan.FromSeconds(ttl);
                lease.RetryRevokeAt = TimeSpan.Zero;
                ScheduleCheckpoint(lease);
            }

            Log.Promoted(_logger, _leases.Count);
        }
    }

    /// <summary>This member is no longer leader: leases stop expiring here; waiting keep-alives are released.</summary>
    public void Demote()
    {
        CancellationTokenSource demoted;
        lock (_lock)
        {
            if (!_primary)
            {
                return;
            }

            _primary = false;
            foreach (var lease in _leases.Values)
            {
                lease.Expiry = TimeSpan.MaxValue;
                lease.NextCheckpointAt = TimeSpan.MaxValue;
            }

            demoted = _demoted;
            _demoted = new CancellationTokenSource();
        }

        demoted.Cancel();
        demoted.Dispose();
    }

    /// <summary>
    /// Renews a lease for another full TTL (keep-alive). Returns the TTL, or null if there is no such lease. Only the
    /// leader renews (<c>etcdserver: not leader</c> otherwise). An expired lease that is being revoked is not renewed:
    /// the call waits until the revoke applies (→ null) or leadership is lost.
    /// </summary>
    public async Task<long?> RenewAsync(long id, CancellationToken cancellationToken)
    {
        LeaseEntry? lease;
        CancellationToken demoted;
        lock (_lock)
        {
            if (!_primary)
            {
                throw EtcdErrors.NotLeader.Exception();
            }

            if (!_leases.TryGetValue(id, out lease))
            {
                return null;
            }

            demoted = _demoted.Token;
            if (lease.Expiry > Now)
            {
                // The checkpointed remaining TTL is replicated state: a renewal clears it through a proposal
                // (LeaderLeaseOps), never here.
                lease.Expiry = Now + TimeSpan.FromSeconds(lease.Ttl);
                if (lease.NextCheckpointAt == TimeSpan.MaxValue)
                {
                    // Not postponed when already scheduled: frequent renewals must not prevent every checkpoint.
                    ScheduleCheckpoint(lease);
                }

                return lease.Ttl;
            }
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, demoted);
        try
        {
            await lease.Revoked.Task.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw EtcdErrors.NotLeader.Exception();
        }

        return null;
    }

    /// <summary>The lease's remaining and granted TTL (and keys if asked), or null if there is no such lease.</summary>
    public LeaseTimeToLiveResponse? TimeToLive(long id, bool withKeys)
    {
        lock (_lock)
        {
            if (!_leases.TryGetValue(id, out var lease))
            {
                return null;
            }

            var response = new LeaseTimeToLiveResponse
            {
                ID = id,
                TTL = RemainingSeconds(lease),
                GrantedTTL = lease.Ttl,
            };
            if (withKeys)
            {
                var keys = lease.Keys.ToArray();
                Array.Sort(keys, ByteKeyComparer.Instance);
                foreach (var key in keys)
                {
                    response.Keys.Add(ByteString.CopyFrom(key));
                }
            }

            return response;
        }
    }

    /// <summary>Every lease, soonest expiry first (as etcd lists them).</summary>
    public IReadOnlyList<LeaseStatus> Leases()
    {
        lock (_lock)
        {
            return
            [
                .. _leases.Values
                    .OrderBy(l => l.Expiry)
                    .ThenBy(l => l.Id)
                    .Select(l => new LeaseStatus { ID = l.Id }),
            ];
        }
    }

    /// <summary>
    /// Expired leases whose revocation should be proposed now (at most <paramref name="limit"/>); each returned lease
    /// is not returned again before <see cref="LessorOptions.ExpiredRetryInterval"/>, in case its revoke is lost.
    /// Empty unless this member is the leader.
    /// </summary>
    public IReadOnlyList<long> TakeExpired(int limit)
    {
        lock (_lock)
        {
            if (!_primary)
            {
                return [];
            }

            var now = Now;
            var expired = new List<long>();
            foreach (var lease in _leases.Values.OrderBy(l => l.Expiry))
            {
                if (expired.Count >= limit || lease.Expiry > now)
                {
                    break;
                }

                if (lease.RetryRevokeAt > now)
                {
                    continue;
                }

                lease.RetryRevokeAt = now + _options.ExpiredRetryInterval;
                expired.Add(lease.Id);
            }

            return expired;
        }
    }

    /// <summary>True when the lease has a checkpointed remaining TTL that a renewal should clear.</summary>
    public bool HasCheckpoint(long id)
    {
        lock (_lock)
        {
            return _leases.TryGetValue(id, out var lease) && lease.RemainingTtl > 0;
        }
    }

    /// <summary>
    /// The remaining TTLs due for a checkpoint proposal now (at most <see cref="LessorOptions.MaxCheckpointsPerProposal"/>),
    /// in seconds rounded up as etcd does; a lease whose remaining TTL is still its full TTL is skipped. Each returned
    /// lease is scheduled again when its checkpoint applies. Null when nothing is due (or this member does not lead).
    /// </summary>
    public LeaseCheckpointRequest? TakeDueCheckpoints()
    {
        lock (_lock)
        {
            if (!_primary || !_options.CheckpointEnabled)
            {
                return null;
            }

            var now = Now;
            LeaseCheckpointRequest? request = null;
            foreach (var lease in _leases.Values)
            {
                if (lease.NextCheckpointAt > now)
                {
                    continue;
                }

                lease.NextCheckpointAt = TimeSpan.MaxValue;
                var remaining = (long)Math.Ceiling((lease.Expiry - now).TotalSeconds);
                if (remaining >= lease.Ttl || remaining <= 0)
                {
                    continue;
                }

                request ??= new LeaseCheckpointRequest();
                request.Checkpoints.Add(new LeaseCheckpoint { ID = lease.Id, RemainingTTL = remaining });
                if (request.Checkpoints.Count >= _options.MaxCheckpointsPerProposal)
                {
                    break;
                }
            }

            return request;
        }
    }

    /// <summary>Schedules the lease's next checkpoint when it will live longer than one interval (etcd). Lock held.</summary>
    private void ScheduleCheckpoint(LeaseEntry lease)
    {
        var interval = _options.CheckpointInterval;
        if (!_options.CheckpointEnabled || interval <= TimeSpan.Zero || lease.Expiry == TimeSpan.MaxValue)
        {
            return;
        }

        var now = Now;
        if (lease.Expiry - now > interval)
        {
            lease.NextCheckpointAt = now + interval;
        }
    }

    private long RemainingSeconds(LeaseEntry lease)
    {
        if (lease.Expiry == TimeSpan.MaxValue)
        {
            // Not the leader: the lease has no local deadline; report its TTL as etcd's followers do after promotion.
            return lease.RemainingTtl > 0 ? lease.RemainingTtl : lease.Ttl;
        }

        return (long)(lease.Expiry - Now).TotalSeconds;
    }
}
