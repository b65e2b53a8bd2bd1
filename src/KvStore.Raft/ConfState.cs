namespace KvStore.Raft;

/// <summary>The membership at some log index: who votes and who only learns.</summary>
public sealed class ConfState
{
    /// <summary>An empty membership (a member that was not bootstrapped and has not learned one yet).</summary>
    public static readonly ConfState Empty = new();

    /// <summary>Members counted for elections and commitment, ascending.</summary>
    public IReadOnlyList<ulong> Voters { get; init; } = [];

    /// <summary>Members that receive the log but never vote or count toward a quorum, ascending.</summary>
    public IReadOnlyList<ulong> Learners { get; init; } = [];

    /// <summary>True when the membership names nobody.</summary>
    public bool IsEmpty => Voters.Count == 0 && Learners.Count == 0;

    /// <inheritdoc/>
    public override string ToString() => $"voters=[{string.Join(',', Voters)}] learners=[{string.Join(',', Learners)}]";
}
