using BenchmarkDotNet.Attributes;
using KvStore.Raft;
using KvStore.Raft.Storage;

namespace KvStore.MicroBench;

/// <summary>
/// The Raft core alone: one proposal on the leader of three in-memory members, carried through every Ready (persist
/// to memory, deliver messages, advance) until all three have committed and applied it. No I/O, no clock: what the
/// consensus logic itself costs per write, for the whole cluster.
/// </summary>
[MemoryDiagnoser]
public class RaftBenchmarks
{
    private const int Members = 3;
    private readonly byte[] _payload = new byte[256];
    private readonly Queue<Message> _wire = new();
    private RaftNode[] _nodes = [];
    private InMemoryRaftStorage[] _storages = [];

    [GlobalSetup]
    public void Setup()
    {
        var voters = Enumerable.Range(1, Members).Select(i => (ulong)i).ToArray();
        _storages = voters.Select(_ => new InMemoryRaftStorage()).ToArray();
        _nodes = voters.Select(id => new RaftNode(new RaftConfig { Id = id, Storage = _storages[id - 1], BootstrapVoters = voters })).ToArray();
        Settle();
        _nodes[0].Campaign();
        Settle();
        if (_nodes[0].Role != RaftRole.Leader)
        {
            throw new InvalidOperationException("member 1 did not win the election");
        }
    }

    [Benchmark]
    public ulong ProposeAndCommitOnThreeMembers()
    {
        if (_nodes[0].Propose(_payload) != RequestResult.Accepted)
        {
            throw new InvalidOperationException("the proposal was refused");
        }

        Settle();
        var applied = _nodes[0].AppliedIndex;
        if (applied % 4096 == 0)
        {
            // Keep the in-memory logs small, as snapshots do for the server.
            for (var i = 0; i < Members; i++)
            {
                var node = _nodes[i];
                _storages[i].CreateSnapshot(node.AppliedIndex, node.ConfState, ReadOnlyMemory<byte>.Empty);
                _storages[i].Compact(node.AppliedIndex);
            }
        }

        return applied;
    }

    /// <summary>Runs every member's Ready loop and delivers every message until nothing moves.</summary>
    private void Settle()
    {
        bool moved;
        do
        {
            moved = false;
            for (var i = 0; i < Members; i++)
            {
                var node = _nodes[i];
                while (node.HasReady())
                {
                    var ready = node.GetReady();
                    if (ready.Snapshot is not null)
                    {
                        _storages[i].ApplySnapshot(ready.Snapshot);
                    }

                    if (ready.Entries.Count > 0)
                    {
                        _storages[i].Append(ready.Entries);
                    }

                    if (ready.HardState is { } hardState)
                    {
                        _storages[i].SetHardState(hardState);
                    }

                    foreach (var m in ready.Messages)
                    {
                        _wire.Enqueue(m);
                    }

                    node.Advance(ready);
                    moved = true;
                }
            }

            while (_wire.TryDequeue(out var m))
            {
                _nodes[m.To - 1].Step(m);
                moved = true;
            }
        }
        while (moved);
    }
}
