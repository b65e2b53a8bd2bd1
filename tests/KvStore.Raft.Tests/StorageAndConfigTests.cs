using KvStore.Raft.Storage;

namespace KvStore.Raft.Tests;

public sealed class StorageAndConfigTests
{
    private static InMemoryRaftStorage StorageWith(ulong count, ulong term = 1)
    {
        var s = new InMemoryRaftStorage();
        s.Append(Enumerable.Range(1, (int)count).Select(i => new Entry { Index = (ulong)i, Term = term, Data = new byte[8] }).ToList());
        return s;
    }

    [Theory]
    [InlineData(1UL, 3UL, StorageStatus.Compacted)]
    [InlineData(5UL, 6UL, StorageStatus.Compacted)]
    [InlineData(6UL, 8UL, StorageStatus.Ok)]
    [InlineData(6UL, 11UL, StorageStatus.Ok)]
    [InlineData(6UL, 12UL, StorageStatus.Unavailable)]
    public void Entries_report_compacted_and_unavailable_ranges(ulong lo, ulong hi, StorageStatus want)
    {
        var s = StorageWith(10);
        s.CreateSnapshot(5, new ConfState { Voters = [1] }, new byte[1]);
        s.Compact(5);
        s.Entries(lo, hi, ulong.MaxValue, out var ents).Should().Be(want);
        if (want == StorageStatus.Ok)
        {
            ents.Select(e => e.Index).Should().Equal(Enumerable.Range((int)lo, (int)(hi - lo)).Select(i => (ulong)i));
        }
    }

    [Fact]
    public void Term_of_the_snapshot_index_survives_compaction()
    {
        var s = StorageWith(10, term: 3);
        s.CreateSnapshot(5, ConfState.Empty, new byte[1]);
        s.Compact(5);
        s.FirstIndex().Should().Be(6);
        s.Term(5, out var t).Should().Be(StorageStatus.Ok);
        t.Should().Be(3);
        s.Term(4, out _).Should().Be(StorageStatus.Compacted);
        s.Term(11, out _).Should().Be(StorageStatus.Unavailable);
    }

    [Fact]
    public void Append_replaces_a_conflicting_suffix_and_size_limit_keeps_one_entry()
    {
        var s = StorageWith(10);
        s.Append([new Entry { Index = 4, Term = 2 }]);
        s.LastIndex().Should().Be(4);
        s.Entries(1, 5, 1, out var ents).Should().Be(StorageStatus.Ok);
        ents.Should().ContainSingle();
    }

    [Fact]
    public void Apply_snapshot_replaces_everything_and_rejects_older_ones()
    {
        var s = StorageWith(3);
        var snap = new Snapshot { Metadata = new SnapshotMetadata { Index = 20, Term = 4, ConfState = new ConfState { Voters = [1, 2] } } };
        s.ApplySnapshot(snap).Should().BeTrue();
        s.FirstIndex().Should().Be(21);
        s.LastIndex().Should().Be(20);
        s.InitialState().ConfState.Voters.Should().Equal(1UL, 2UL);
        s.ApplySnapshot(new Snapshot { Metadata = new SnapshotMetadata { Index = 10, Term = 4 } }).Should().BeFalse();
    }

    public static TheoryData<RaftConfig> InvalidConfigs => new()
    {
        new RaftConfig { Id = 0, Storage = new InMemoryRaftStorage() },
        new RaftConfig { Id = 1, Storage = null! },
        new RaftConfig { Id = 1, Storage = new InMemoryRaftStorage(), HeartbeatTick = 0 },
        new RaftConfig { Id = 1, Storage = new InMemoryRaftStorage(), ElectionTick = 1, HeartbeatTick = 1 },
        new RaftConfig { Id = 1, Storage = new InMemoryRaftStorage(), MaxInflightMsgs = 0 },
        new RaftConfig { Id = 1, Storage = new InMemoryRaftStorage(), MaxSizePerMsg = 0 },
        new RaftConfig { Id = 1, Storage = new InMemoryRaftStorage(), BootstrapVoters = [1, 1] },
    };

    [Theory]
    [MemberData(nameof(InvalidConfigs))]
    public void Validate_rejects_bad_configs(RaftConfig config)
    {
        var act = () => new RaftNode(config);
        act.Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Conf_change_round_trips_through_entry_data()
    {
        var cc = new ConfChange { Type = ConfChangeType.AddLearnerNode, NodeId = 0x0102030405060708, Context = new byte[] { 9, 8 } };
        var back = ConfChange.Decode(cc.Encode());
        back.Type.Should().Be(cc.Type);
        back.NodeId.Should().Be(cc.NodeId);
        back.Context.ToArray().Should().Equal(9, 8);
        var bad = () => ConfChange.Decode(new byte[3]);
        bad.Should().Throw<FormatException>();
    }

    [Fact]
    public void Single_member_cluster_commits_after_persisting_and_advancing()
    {
        var storage = new InMemoryRaftStorage();
        var node = new RaftNode(new RaftConfig { Id = 1, Storage = storage, BootstrapVoters = [1] });
        node.Propose(new byte[] { 1 }).Should().Be(RequestResult.NoLeader);

        void Drain()
        {
            while (node.HasReady())
            {
                var rd = node.GetReady();
                if (rd.HardState is { } hs)
                {
                    storage.SetHardState(hs);
                }

                storage.Append(rd.Entries);
                node.Advance(rd);
            }
        }

        Drain();
        node.Campaign();
        node.Role.Should().Be(RaftRole.Leader);
        node.Propose(new byte[] { 1 }).Should().Be(RequestResult.Accepted);
        var last = node.LastIndex;
        node.CommitIndex.Should().BeLessThan(last, "nothing commits before the leader persisted it");
        Drain();
        node.CommitIndex.Should().Be(last);
        node.AppliedIndex.Should().Be(last);
        var getTwice = () =>
        {
            node.Propose(new byte[] { 2 });
            node.GetReady();
            node.GetReady();
        };
        getTwice.Should().Throw<InvalidOperationException>();
    }
}
