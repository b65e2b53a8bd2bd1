using System.Text;
using KvStore.Server.Auth;

namespace KvStore.Server.Tests.Auth;

/// <summary>Permission intervals as etcd's interval tree answers them: points, ranges, prefixes, from-key, unions.</summary>
public sealed class KeyRangeSetTests
{
    private static readonly KeyRangeSet Perms = KeyRangeSet.From(
    [
        (B("/single"), []),              // one key
        (B("/range/a"), B("/range/m")),  // [/range/a, /range/m)
        (B("/pfx/"), B("/pfx0")),        // prefix /pfx/
        (B("/z"), [0]),                  // from /z to the end
        (B("!b"), B("!c")),              // [!b, !c) and [!c, !d) touch: together they cover [!b, !d)
        (B("!c"), B("!d")),
    ]);

    public static TheoryData<string, string, string, bool> Cases => new()
    {
        { "the single key", "/single", "", true },
        { "a key next to the single key", "/single2", "", false },
        { "a range starting at the single key", "/single", "/single2", false },
        { "a key inside the range", "/range/c", "", true },
        { "the range end itself is outside", "/range/m", "", false },
        { "a sub-range", "/range/b", "/range/l", true },
        { "the whole range", "/range/a", "/range/m", true },
        { "a range past the end", "/range/a", "/range/n", false },
        { "the prefix as a range", "/pfx/", "/pfx0", true },
        { "a key under the prefix", "/pfx/deep/key", "", true },
        { "from-key inside an open-ended permission", "/zz", "\0", true },
        { "from-key on a bounded permission", "/range/a", "\0", false },
        { "a range inside the open-ended permission", "/z1", "/z9", true },
        { "every key", "", "\0", false },
        { "a range over two touching permissions", "!b", "!d", true },
        { "a range over a gap", "!b", "!e", false },
        { "a key before everything", "/a", "", false },
        { "an inverted range names its start key", "/range/c", "/range/b", true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Covers_follows_etcd_interval_rules(string why, string key, string rangeEnd, bool expected)
    {
        Perms.Covers(B(key), B(rangeEnd)).Should().Be(expected, why);
    }

    [Fact]
    public void Empty_set_covers_nothing()
    {
        KeyRangeSet.Empty.Covers(B("a"), []).Should().BeFalse();
        KeyRangeSet.From([]).Covers(B(""), [0]).Should().BeFalse();
    }

    [Fact]
    public void Every_key_permission_covers_every_range()
    {
        var all = KeyRangeSet.From([(B(""), [0])]);
        all.Covers(B(""), [0]).Should().BeTrue();
        all.Covers(B("anything"), []).Should().BeTrue();
    }

    private static byte[] B(string text) => Encoding.UTF8.GetBytes(text);
}
