using KvStore.Raft;
using KvStore.Server.Replication;
using Xunit;

namespace KvStore.Server.Tests.Cluster;

/// <summary>The raft loop's inbox: its wake-up never loses a post, flags coalesce, and which thread the loop resumes on.</summary>
public sealed class RaftInboxTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task A_post_before_the_wait_completes_it_at_once_and_only_once()
    {
        var inbox = new RaftInbox();
        Assert.True(inbox.Post(new RaftProposal(1, [1])));
        Assert.True(inbox.HasWork);

        Assert.True(inbox.WaitAsync().AsTask().IsCompleted);
        Assert.True(inbox.TryTakeProposal(out var proposal));
        Assert.Equal(1UL, proposal.Id);
        Assert.False(inbox.HasWork);

        // The post was consumed by the first wait: the next one waits for a new post.
        var next = inbox.WaitAsync().AsTask();
        Assert.False(next.IsCompleted);
        Assert.True(inbox.Post(new PeerInput(new Message { Type = MessageType.Heartbeat, From = 2 }, null)));
        await next.WaitAsync(Wait);
        Assert.True(inbox.TryTakePeer(out var input));
        Assert.Equal(2UL, input.Message.From);
    }

    [Fact]
    public async Task Ticks_and_reads_posted_several_times_are_taken_once()
    {
        var inbox = new RaftInbox();
        inbox.PostTick();
        inbox.PostTick();
        inbox.PostRead();
        inbox.PostRead();
        await inbox.WaitAsync().AsTask().WaitAsync(Wait);

        Assert.True(inbox.TakeTick());
        Assert.False(inbox.TakeTick());
        Assert.True(inbox.TakeRead());
        Assert.False(inbox.TakeRead());
        Assert.False(inbox.HasWork);
    }

    [Fact]
    public async Task Closing_wakes_the_reader_and_refuses_later_posts_but_keeps_what_was_queued()
    {
        var inbox = new RaftInbox();
        var waiting = inbox.WaitAsync().AsTask();
        Assert.True(inbox.Post(new RaftProposal(7, [7])));
        await waiting.WaitAsync(Wait);
        waiting = inbox.WaitAsync().AsTask();
        Assert.False(waiting.IsCompleted);

        inbox.Close();
        await waiting.WaitAsync(Wait);
        Assert.True(inbox.IsClosed);
        Assert.False(inbox.Post(new RaftProposal(8, [8])));
        Assert.False(inbox.Post(new PeerInput(new Message(), null)));
        Assert.True(inbox.TryTakeProposal(out var kept));
        Assert.Equal(7UL, kept.Id);
        Assert.False(inbox.TryTakeProposal(out _));
    }

    [Fact]
    public async Task A_proposal_resumes_a_waiting_loop_on_the_posting_thread_and_peer_input_on_another()
    {
        var inbox = new RaftInbox();
        var (poster, resumed) = await PostFromThreadAsync(inbox, i => i.Post(new RaftProposal(1, [1])));
        Assert.Equal(poster, resumed);

        (poster, resumed) = await PostFromThreadAsync(inbox, i => i.Post(new PeerInput(new Message(), null)));
        Assert.NotEqual(poster, resumed);
    }

    [Fact]
    public async Task Concurrent_posters_never_leave_the_reader_asleep_with_work_queued()
    {
        var inbox = new RaftInbox();
        const int perPoster = 20_000;
        var posters = Enumerable.Range(0, 4)
            .Select(p => Task.Run(() =>
            {
                for (var i = 0; i < perPoster; i++)
                {
                    if (p % 2 == 0)
                    {
                        inbox.Post(new RaftProposal((ulong)i, []));
                    }
                    else
                    {
                        inbox.Post(new PeerInput(new Message(), null));
                    }
                }
            }))
            .ToArray();

        var taken = 0;
        while (taken < 4 * perPoster)
        {
            if (!inbox.HasWork)
            {
                await inbox.WaitAsync().AsTask().WaitAsync(Wait);
                continue;
            }

            while (inbox.TryTakeProposal(out _))
            {
                taken++;
            }

            while (inbox.TryTakePeer(out _))
            {
                taken++;
            }
        }

        await Task.WhenAll(posters).WaitAsync(Wait);
        Assert.Equal(4 * perPoster, taken);
        Assert.False(inbox.HasWork);
    }

    /// <summary>Suspends a reader in WaitAsync, posts from a dedicated thread, returns (poster, resumed) thread ids.</summary>
    private static async Task<(int Poster, int Resumed)> PostFromThreadAsync(RaftInbox inbox, Action<RaftInbox> post)
    {
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var resumedOn = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var reader = Task.Run(async () =>
        {
            while (inbox.TryTakeProposal(out _) || inbox.TryTakePeer(out _))
            {
            }

            var wait = inbox.WaitAsync().AsTask();
            Assert.False(wait.IsCompleted);
            waiting.TrySetResult();
            await wait;
            resumedOn.TrySetResult(Environment.CurrentManagedThreadId);
        });

        await waiting.Task.WaitAsync(Wait);
        var posterId = 0;
        var thread = new Thread(() =>
        {
            posterId = Environment.CurrentManagedThreadId;
            post(inbox);
        });
        thread.Start();
        thread.Join();
        var resumed = await resumedOn.Task.WaitAsync(Wait);
        await reader.WaitAsync(Wait);
        return (posterId, resumed);
    }
}
