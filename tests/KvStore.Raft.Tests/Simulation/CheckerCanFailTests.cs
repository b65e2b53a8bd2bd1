namespace KvStore.Raft.Tests.Simulation;

/// <summary>
/// The checks are not vacuous. The end-to-end proof is <see cref="RaftPaperTests.Figure_8_is_safe_only_with_the_current_term_commit_rule"/>:
/// with the current-term commit rule switched off, the checker reports a State Machine Safety violation. (Random
/// chaos rarely builds figure 8 on its own: 3,000 seeds with the rule off found none, so the scripted run is the proof.)
/// </summary>
public sealed class CheckerCanFailTests
{
    [Fact]
    public void Checker_flags_two_leaders_in_one_term_and_divergent_applies()
    {
        var checker = new SafetyChecker();
        checker.Applied(1, 5, 111, "applied");
        checker.Applied(2, 5, 222, "applied");
        checker.Persisted(1, 3, 1, 7);
        checker.Persisted(2, 3, 1, 8);
        checker.Violations.Should().HaveCount(2);
        checker.Violations[0].Should().StartWith("State Machine Safety");
        checker.Violations[1].Should().StartWith("Log Matching");
    }
}
