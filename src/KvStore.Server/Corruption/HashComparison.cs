namespace KvStore.Server.Corruption;

/// <summary>A member's HashKV answer: the hash of its key space up to <see cref="Revision"/>.</summary>
/// <param name="MemberId">The member that answered.</param>
/// <param name="Revision">The member's current revision when it answered (the response header's revision).</param>
/// <param name="CompactRevision">The member's compact revision (-1 if never compacted).</param>
/// <param name="Hash">The hash.</param>
public sealed record MemberHash(ulong MemberId, long Revision, long CompactRevision, uint Hash);

/// <summary>A member whose data differs from the local member's, with what was compared.</summary>
/// <param name="MemberId">The member whose hash or revisions differ.</param>
/// <param name="Revision">The revision both hashes cover.</param>
/// <param name="LocalHash">This member's hash at <see cref="Revision"/>.</param>
/// <param name="PeerHash">The other member's hash at <see cref="Revision"/>.</param>
/// <param name="Reason">Why the answers are inconsistent.</param>
public sealed record HashMismatch(ulong MemberId, long Revision, uint LocalHash, uint PeerHash, string Reason);

/// <summary>
/// The decisions of the corruption checks, free of I/O so they can be tested alone. The inputs are this member's hash
/// at its revision and the peers' answers to HashKV at that same revision; a peer that did not answer (down, or
/// compacted past the revision) is simply absent, as etcd skips it.
/// </summary>
public static class HashComparison
{
    /// <summary>
    /// The periodic check on the leader (etcd 3.4's rules): a follower is inconsistent when its revision is ahead of the
    /// leader's, when it compacted further than the leader, or when both compacted at the same point and the hashes
    /// differ. Different compact revisions with different hashes are not comparable (compaction removes revisions from
    /// the hash), so they are not reported.
    /// </summary>
    /// <param name="local">The leader's hash, taken at the revision the followers were asked for.</param>
    /// <param name="localRevisionAfter">The leader's revision once the followers answered.</param>
    /// <param name="localCompactRevisionAfter">The leader's compact revision once the followers answered.</param>
    /// <param name="peers">The followers' answers.</param>
    public static IReadOnlyList<HashMismatch> Periodic(MemberHash local, long localRevisionAfter, long localCompactRevisionAfter, IEnumerable<MemberHash> peers)
    {
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(peers);
        var mismatches = new List<HashMismatch>();
        foreach (var peer in peers)
        {
            string? reason = null;
            if (peer.Revision > localRevisionAfter)
            {
                reason = $"member's revision {peer.Revision} is ahead of the leader's {localRevisionAfter}";
            }
            else if (peer.CompactRevision > localCompactRevisionAfter)
            {
                reason = $"member's compact revision {peer.CompactRevision} is ahead of the leader's {localCompactRevisionAfter}";
            }
            else if (peer.CompactRevision == local.CompactRevision && peer.Hash != local.Hash)
            {
                reason = "same compact revision, different hashes";
            }

            if (reason is not null)
            {
                mismatches.Add(new HashMismatch(peer.MemberId, local.Revision, local.Hash, peer.Hash, reason));
            }
        }

        return mismatches;
    }

    /// <summary>
    /// The leader's check of itself (etcd 3.4 and 3.5 do the same): its key space hashed twice, before and after asking the
    /// followers. With no write and no compaction in between (same revision, same compact revision) the two hashes must
    /// be equal; if they are not, the leader's own store changed under it and the leader is the inconsistent member.
    /// </summary>
    /// <param name="before">The leader's hash before asking the followers.</param>
    /// <param name="after">The leader's hash once they answered.</param>
    public static HashMismatch? LeaderSelf(MemberHash before, MemberHash after)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(after);
        return before.Revision == after.Revision && before.CompactRevision == after.CompactRevision && before.Hash != after.Hash
            ? new HashMismatch(before.MemberId, before.Revision, before.Hash, after.Hash, "the leader's own hash changed at the same revision")
            : null;
    }

    /// <summary>
    /// The check before serving (etcd's initial check): a peer that hashed this member's revision differently while
    /// compacted at the same point is inconsistent. A different hash after a different compaction is not comparable.
    /// </summary>
    /// <param name="local">This member's hash at its current revision, which the peers were asked for.</param>
    /// <param name="peers">The peers' answers at that revision.</param>
    public static IReadOnlyList<HashMismatch> Initial(MemberHash local, IEnumerable<MemberHash> peers)
    {
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(peers);
        return [.. peers
            .Where(p => p.Hash != local.Hash && p.CompactRevision == local.CompactRevision)
            .Select(p => new HashMismatch(p.MemberId, local.Revision, local.Hash, p.Hash, "same compact revision, different hashes"))];
    }
}
