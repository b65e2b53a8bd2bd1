using System.Collections;
using KvStore.Server.Auth;
using KvStore.Server.Options;

namespace KvStore.Server.Tests.Auth;

/// <summary>--auth-token, --auth-token-ttl and --bcrypt-cost as etcd spells them, refused clearly when malformed.</summary>
public sealed class AuthFlagTests
{
    [Fact]
    public void Defaults_are_etcds()
    {
        var options = Parse();
        options.AuthToken.Should().Be("simple");
        options.AuthTokenTtlSeconds.Should().Be(300UL);
        options.BcryptCost.Should().Be(10);
    }

    [Fact]
    public void Jwt_options_parse_in_etcds_syntax()
    {
        var options = Parse("--auth-token=jwt,pub-key=/k.pub,priv-key=/k,sign-method=ES256,ttl=10m", "--bcrypt-cost=4", "--auth-token-ttl=30");
        var jwt = JwtOptions.Parse(options.AuthToken);
        jwt.Should().Be(new JwtOptions("ES256", "/k.pub", "/k", TimeSpan.FromMinutes(10)));
        options.BcryptCost.Should().Be(4);
        options.AuthTokenTtlSeconds.Should().Be(30UL);
    }

    [Theory]
    [InlineData("--bcrypt-cost=3", "*bcrypt-cost*between 4 and 31*")]
    [InlineData("--auth-token=oauth", "*unknown token type \"oauth\"*")]
    [InlineData("--auth-token=jwt,priv-key=/k", "*sign-method*")]
    [InlineData("--auth-token=jwt,sign-method=RS256", "*pub-key*priv-key*")]
    [InlineData("--auth-token=jwt,sign-method=RS256,priv-key=/k,colour=blue", "*unknown token option colour=blue*")]
    [InlineData("--auth-token=jwt,sign-method=RS256,priv-key=/k,ttl=soon", "*invalid ttl soon*")]
    public void Malformed_auth_flags_fail_at_start_with_the_reason(string arg, string message)
    {
        var act = () => Parse(arg);
        act.Should().Throw<OptionsException>().WithMessage(message);
    }

    private static ServerOptions Parse(params string[] args) => FlagParser.Parse(args, new Hashtable()).Options;
}
