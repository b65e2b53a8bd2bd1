using Etcdserverpb;
using KvStore.Server.Corruption;
using KvStore.Server.Tests.Apply;
using KvStore.Server.Tests.Lease;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvStore.Server.Tests.Corruption;

public sealed class PeriodicHashCheckTests : IDisposable
{
    private const ulong LeaderId = 0x1111;
    private readonly ApplierFixture _fixture = new();
    private readonly RecordingProposer _proposer = new();

    public void Dispose() => _fixture.Dispose();

    [Fact]
    public async Task A_follower_with_a_different_hash_gets_its_corrupt_alarm_proposed_once()
    {
        _fixture.Put("a", "1");
        _fixture.Put("b", "2");
        var local = _fixture.Store.HashKV(0);
        var peers = new ListedPeers(
            new MemberHash(2, local.Revision, local.CompactRevision, local.Hash),
            new MemberHash(3, local.Revision, local.CompactRevision, local.Hash ^ 1));
        var check = new PeriodicHashCheck(_fixture.Store, LeaderId, peers, _proposer, _fixture.Alarms, TimeSpan.FromSeconds(1), NullLogger.Instance);

        var mismatches = await check.RunAsync(CancellationToken.None);

        peers.AskedRevision.Should().Be(local.Revision);
        mismatches.Should().ContainSingle().Which.Should().BeEquivalentTo(
            new HashMismatch(3, local.Revision, local.Hash, local.Hash ^ 1, "same compact revision, different hashes"));
        var alarm = _proposer.Proposals.Should().ContainSingle().Subject.Alarm;
        alarm.Should().BeEquivalentTo(new AlarmRequest { Action = AlarmRequest.Types.AlarmAction.Activate, MemberID = 3, Alarm = AlarmType.Corrupt });

        // Once the log applied the alarm, the next round still reports the member but does not propose again.
        _fixture.Apply(_proposer.Proposals[0]);
        _fixture.Alarms.Corrupt.Should().BeTrue();
        (await check.RunAsync(CancellationToken.None)).Should().ContainSingle();
        _proposer.Proposals.Should().ContainSingle();
    }

    [Fact]
    public async Task Consistent_followers_raise_nothing()
    {
        _fixture.Put("a", "1");
        var local = _fixture.Store.HashKV(0);
        var peers = new ListedPeers(new MemberHash(2, local.Revision, local.CompactRevision, local.Hash));
        var check = new PeriodicHashCheck(_fixture.Store, LeaderId, peers, _proposer, _fixture.Alarms, TimeSpan.FromSeconds(1), NullLogger.Instance);

        (await check.RunAsync(CancellationToken.None)).Should().BeEmpty();
        _proposer.Proposals.Should().BeEmpty();
    }

    private sealed class ListedPeers(params MemberHash[] answers) : IPeerHashSource
    {
        public long AskedRevision { get; private set; }

        public Task<IReadOnlyList<MemberHash>> AskPeersAsync(long revision, TimeSpan timeout, CancellationToken cancellationToken)
        {
            AskedRevision = revision;
            return Task.FromResult<IReadOnlyList<MemberHash>>(answers);
        }
    }
}
