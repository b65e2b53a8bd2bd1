using System.Text;
using FluentAssertions;
using KvStore.Server.Identity;
using KvStore.Server.Options;
using KvStore.Server.Replication;
using KvStore.Server.Tests.Peer;
using Xunit;

namespace KvStore.Server.Tests.Replication;

/// <summary>
/// The JSON that members replicate (member records, conf-change contexts) and keep on disk (identity.json) is written
/// by source-generated serializers; these bytes are what earlier versions wrote and read, so a data directory or a log
/// entry written by one version is read by the next, and every member of a mixed-version cluster applies the same bytes.
/// </summary>
public sealed class StoredJsonFormatTests : IDisposable
{
    private readonly TempDirectory _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void Member_record_bytes_are_stable_and_round_trip()
    {
        var member = new ClusterMember(0xabc, "m0", ["http://127.0.0.1:2380"], ["http://127.0.0.1:2379"], IsLearner: true);
        var bytes = member.Encode();
        Encoding.UTF8.GetString(bytes).Should().Be(
            """{"id":2748,"name":"m0","peerURLs":["http://127.0.0.1:2380"],"clientURLs":["http://127.0.0.1:2379"],"isLearner":true}""");
        var back = ClusterMember.Decode(bytes);
        back.Id.Should().Be(0xabc);
        back.Name.Should().Be("m0");
        back.PeerUrls.Should().Equal("http://127.0.0.1:2380");
        back.ClientUrls.Should().Equal("http://127.0.0.1:2379");
        back.IsLearner.Should().BeTrue();
    }

    [Fact]
    public void Conf_change_context_bytes_are_stable_and_round_trip()
    {
        var context = new ConfChangeContext(7, 9, new ClusterMember(1, "", ["http://a:2380"], [], false));
        var bytes = context.Encode();
        Encoding.UTF8.GetString(bytes).Should().Be(
            """{"proposer":7,"requestId":9,"member":{"id":1,"name":"","peerURLs":["http://a:2380"],"clientURLs":[],"isLearner":false}}""");
        var back = ConfChangeContext.Decode(bytes)!;
        back.Proposer.Should().Be(7);
        back.RequestId.Should().Be(9);
        back.Member!.PeerUrls.Should().Equal("http://a:2380");
        ConfChangeContext.Decode([]).Should().BeNull();
        Encoding.UTF8.GetString(new ConfChangeContext(1, 2, null).Encode()).Should().Be("""{"proposer":1,"requestId":2,"member":null}""");
    }

    [Fact]
    public void Identity_file_keeps_its_format_and_is_read_back()
    {
        var options = new ServerOptions { Name = "m0" };
        var identity = new MemberIdentity(0xe37eb15d4ebd7253, 0xbf56c026db39db51, "m0", ["http://127.0.0.1:36301"], [])
        {
            Peers = [new KnownPeer(5, "m1", ["http://127.0.0.1:36303"], IsLearner: false)],
        };
        MemberIdentity.Save(_tmp.Path, identity);
        File.ReadAllText(Path.Combine(_tmp.Path, MemberIdentity.FileName)).Should().Be(
            """{"MemberId":"e37eb15d4ebd7253","ClusterId":"bf56c026db39db51","Name":"m0","PeerUrls":["http://127.0.0.1:36301"],"Peers":[{"Id":5,"Name":"m1","PeerUrls":["http://127.0.0.1:36303"],"IsLearner":false}]}""");

        // A file an earlier version wrote (no known peers) is read as it was.
        File.WriteAllText(
            Path.Combine(_tmp.Path, MemberIdentity.FileName),
            """{"MemberId":"e37eb15d4ebd7253","ClusterId":"bf56c026db39db51","Name":"m0","PeerUrls":["http://127.0.0.1:36301"],"Peers":null}""");
        var loaded = MemberIdentity.TryLoad(_tmp.Path, options)!;
        loaded.MemberId.Should().Be(0xe37eb15d4ebd7253);
        loaded.ClusterId.Should().Be(0xbf56c026db39db51);
        loaded.PeerUrls.Should().Equal("http://127.0.0.1:36301");
        loaded.Peers.Should().BeEmpty();
    }
}
