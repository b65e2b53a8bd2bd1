using System.Security.Cryptography;
using KvStore.Server.Auth;
using KvStore.Server.Options;
using KvStore.Server.Tests.Lease;

namespace KvStore.Server.Tests.Auth;

/// <summary>JWT tokens: issued with the private key, accepted with the public key alone, refused when expired or forged.</summary>
public sealed class JwtTokenProviderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvstore-jwt-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("RS256")]
    [InlineData("PS384")]
    [InlineData("ES256")]
    public void A_token_from_one_member_is_accepted_by_another_holding_only_the_public_key(string method)
    {
        var (priv, pub) = WriteKeys(method.StartsWith("ES", StringComparison.Ordinal), "a");
        var time = new ManualTimeProvider();
        var issuer = new JwtTokenProvider(new JwtOptions(method, pub, priv, TimeSpan.FromMinutes(5)), time);
        var verifier = new JwtTokenProvider(new JwtOptions(method, pub, string.Empty, TimeSpan.FromMinutes(5)), time);

        var token = issuer.Assign("alice", 7, string.Empty, 42);
        verifier.Info(token, currentRevision: 9).Should().Be(new AuthInfo("alice", 7), "the revision is the one at issue, not the current one");
        time.Advance(TimeSpan.FromMinutes(6));
        verifier.Info(token, 9).Should().BeNull("expired");
        var act = () => verifier.Assign("alice", 7, string.Empty, 43);
        act.Should().Throw<InvalidOperationException>().WithMessage("*no priv-key*");
    }

    [Fact]
    public void A_token_signed_with_another_key_or_garbage_is_refused()
    {
        var (privA, pubA) = WriteKeys(ec: false, "a");
        var (privB, _) = WriteKeys(ec: false, "b");
        var time = new ManualTimeProvider();
        var verifier = new JwtTokenProvider(new JwtOptions("RS256", pubA, privA, TimeSpan.FromMinutes(5)), time);
        var forger = new JwtTokenProvider(new JwtOptions("RS256", string.Empty, privB, TimeSpan.FromMinutes(5)), time);
        verifier.Info(forger.Assign("root", 1, string.Empty, 1), 1).Should().BeNull();
        verifier.Info("not-a-jwt", 1).Should().BeNull();
        verifier.Info("abcdefghijklmnop.12", 1).Should().BeNull();
    }

    private (string Priv, string Pub) WriteKeys(bool ec, string name)
    {
        AsymmetricAlgorithm key = ec ? ECDsa.Create(ECCurve.NamedCurves.nistP256) : RSA.Create(2048);
        using (key)
        {
            var priv = Path.Combine(_dir, name + ".key");
            var pub = Path.Combine(_dir, name + ".pub");
            File.WriteAllText(priv, key.ExportPkcs8PrivateKeyPem());
            File.WriteAllText(pub, key.ExportSubjectPublicKeyInfoPem());
            return (priv, pub);
        }
    }
}
