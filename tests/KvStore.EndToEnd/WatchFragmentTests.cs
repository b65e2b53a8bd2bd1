using Etcdserverpb;
using Google.Protobuf;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace KvStore.EndToEnd;

/// <summary>
/// Watch fragmentation (fragment=true) as etcd 3.4 does it, on one member run with --max-request-bytes 1 MiB: an event
/// batch larger than the limit plus etcd's 512 KiB gRPC allowance arrives as several responses, each the longest run
/// of events that stays below that size (at least one event), all but the last marked fragment; a watcher that did
/// not ask for fragments gets the batch in one response. Passes against real etcd (KVSTORE_E2E_SERVER=etcd).
/// </summary>
public sealed class WatchFragmentTests(ITestOutputHelper output) : IDisposable
{
    private const int MaxRequestBytes = 1024 * 1024;
    private const int FragmentLimit = MaxRequestBytes + (512 * 1024);
    private const int Keys = 40;
    private const int ValueBytes = 60 * 1024;

    private readonly ServerProcess _server = new(extraArgs: ["--max-request-bytes", MaxRequestBytes.ToString(System.Globalization.CultureInfo.InvariantCulture)]);

    public void Dispose()
    {
        output.WriteLine(_server.LogSince(0));
        _server.Dispose();
    }

    [Fact]
    public async Task A_delete_batch_with_prev_kv_larger_than_the_limit_arrives_in_fragments_as_etcd_sends_them()
    {
        await _server.StartAsync();
        using var channel = GrpcChannel.ForAddress(_server.ClientUrl, new GrpcChannelOptions { MaxReceiveMessageSize = 64 * 1024 * 1024 });
        var kv = new KV.KVClient(channel);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var random = new Random(7);
        long revision = 0;
        for (var i = 0; i < Keys; i++)
        {
            var value = new byte[ValueBytes];
            random.NextBytes(value);
            revision = (await kv.PutAsync(new PutRequest { Key = Key(i), Value = ByteString.CopyFrom(value) }, cancellationToken: timeout.Token)).Header.Revision;
        }

        // Two watchers on one stream from the next revision, both with prev_kv (so the delete events carry the values):
        // one asks for fragments, one does not.
        using var watch = new Watch.WatchClient(channel).Watch(cancellationToken: timeout.Token);
        var ids = new List<long>();
        foreach (var fragment in new[] { true, false })
        {
            await watch.RequestStream.WriteAsync(new WatchRequest
            {
                CreateRequest = new WatchCreateRequest
                {
                    Key = ByteString.CopyFromUtf8("/frag/"), RangeEnd = ByteString.CopyFromUtf8("/frag0"), StartRevision = revision + 1, PrevKv = true, Fragment = fragment,
                },
            });
            (await watch.ResponseStream.MoveNext(timeout.Token)).Should().BeTrue();
            watch.ResponseStream.Current.Created.Should().BeTrue();
            ids.Add(watch.ResponseStream.Current.WatchId);
        }

        // One delete of every key: one revision, one batch of events of about 2.5 MB with their previous values.
        var deleted = await kv.DeleteRangeAsync(new DeleteRangeRequest { Key = ByteString.CopyFromUtf8("/frag/"), RangeEnd = ByteString.CopyFromUtf8("/frag0") }, cancellationToken: timeout.Token);
        deleted.Deleted.Should().Be(Keys);

        var fragments = new List<WatchResponse>();
        var whole = new List<WatchResponse>();
        while (whole.Count == 0 || fragments.Count == 0 || fragments[^1].Fragment)
        {
            (await watch.ResponseStream.MoveNext(timeout.Token)).Should().BeTrue();
            var r = watch.ResponseStream.Current;
            (r.WatchId == ids[0] ? fragments : whole).Add(r);
        }

        output.WriteLine($"fragments: {string.Join(", ", fragments.Select(f => $"{f.Events.Count} events {f.CalculateSize()} B fragment={f.Fragment}"))}");
        whole.Should().ContainSingle().Which.Events.Should().HaveCount(Keys, "a watcher without fragment=true gets the batch whole");
        whole[0].Fragment.Should().BeFalse();

        fragments.Count.Should().BeGreaterThan(1, "the batch is larger than --max-request-bytes plus 512 KiB");
        fragments.SelectMany(f => f.Events).Should().BeEquivalentTo(whole[0].Events, o => o.WithStrictOrdering(), "the fragments together are the batch, in order");
        fragments.Select(f => f.Fragment).Should().Equal(fragments.Select((_, i) => i < fragments.Count - 1), "all but the last are marked fragment");
        var next = 0;
        foreach (var f in fragments)
        {
            next += f.Events.Count;

            // Sized as etcd sizes them while splitting: marked fragment.
            var sized = f.Clone();
            sized.Fragment = true;
            if (f.Events.Count > 1)
            {
                sized.CalculateSize().Should().BeLessThan(FragmentLimit);
            }

            if (next < Keys)
            {
                // The longest run that fits: one more event would have reached the limit.
                var longer = sized;
                longer.Events.Add(whole[0].Events[next]);
                longer.CalculateSize().Should().BeGreaterThanOrEqualTo(FragmentLimit, "fragment ending before event {0} is as long as etcd makes it", next);
            }
        }

        await watch.RequestStream.CompleteAsync();
    }

    private static ByteString Key(int i) => ByteString.CopyFromUtf8($"/frag/{i:D2}");
}
