using System.Collections.Concurrent;
using System.Security.Cryptography;

namespace KvStore.Server.Auth;

/// <summary>
/// etcd's "simple" tokens: "&lt;16 random letters&gt;.&lt;log index&gt;", registered on every member when the
/// Authenticate entry is applied (so any member accepts it), valid for --auth-token-ttl since last use. The registry
/// is in memory: a restarted member forgets its tokens and clients re-authenticate on "invalid auth token", as with etcd.
/// </summary>
public sealed class SimpleTokenProvider : ITokenProvider
{
    private const string Letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    private readonly ConcurrentDictionary<string, Entry> _tokens = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private readonly TimeSpan _ttl;

    public SimpleTokenProvider(TimeSpan ttl, TimeProvider time)
    {
        _ttl = ttl;
        _time = time;
    }

    /// <summary>Tokens currently registered (expired ones until the next prune).</summary>
    public int Count => _tokens.Count;

    public string NewTokenPrefix() => RandomNumberGenerator.GetString(Letters, 16);

    public string Assign(string username, ulong revision, string prefix, ulong index)
    {
        var now = _time.GetUtcNow();
        foreach (var (token, entry) in _tokens)
        {
            if (entry.ExpiresAt <= now)
            {
                _tokens.TryRemove(token, out _);
            }
        }

        var issued = $"{prefix}.{index}";
        _tokens[issued] = new Entry(username, now + _ttl);
        return issued;
    }

    public AuthInfo? Info(string token, ulong currentRevision)
    {
        var now = _time.GetUtcNow();
        if (!_tokens.TryGetValue(token, out var entry) || entry.ExpiresAt <= now)
        {
            return null;
        }

        // Each use extends the token's life by the TTL, as etcd does.
        _tokens.TryUpdate(token, entry with { ExpiresAt = now + _ttl }, entry);
        return new AuthInfo(entry.Username, currentRevision);
    }

    public void InvalidateUser(string username)
    {
        foreach (var (token, entry) in _tokens)
        {
            if (entry.Username == username)
            {
                _tokens.TryRemove(token, out _);
            }
        }
    }

    public void InvalidateAll() => _tokens.Clear();

    private sealed record Entry(string Username, DateTimeOffset ExpiresAt);
}
