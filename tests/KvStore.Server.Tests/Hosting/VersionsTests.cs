
namespace KvStore.Server.Tests.Hosting;

public sealed class VersionsTests
{
    [Fact]
    public void Version_text_starts_with_etcds_four_lines_so_scripts_that_parse_etcd_version_keep_working()
    {
        var lines = Versions.VersionText().Split('\n', StringSplitOptions.RemoveEmptyEntries);

        lines.Should().HaveCount(5);
        lines[0].Should().Be("etcd Version: " + Versions.EtcdServer);
        lines[1].Should().MatchRegex("^Git SHA: .+$");
        lines[2].Should().Be($"Go Version: .NET {Environment.Version}");
        lines[3].Should().MatchRegex("^Go OS/Arch: linux/(amd64|arm64)$");
        lines[4].Should().Be("kvstore Version: " + Versions.KvStore);
    }
}
