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
        var now = _time.GetUtcNow().UtcTicks;
        foreach (var (token, entry) in _tokens)
        {
            if (entry.ExpiresAt <= now)
            {
                _tokens.TryRemove(token, out _);
            }
        }

        var issued = $"{prefix}.{index}";
        _tokens[issued] = new Entry(username, now + _ttl.Ticks);
        return issued;
    }

    public AuthInfo? Info(string token, ulong currentRevision)
    {
        var now = _time.GetUtcNow().UtcTicks;
        if (!_tokens.TryGetValue(token, out var entry) || entry.ExpiresAt <= now)
        {
            return null;
        }

        // Each use extends the token's life by the TTL, as etcd does. Checked on every request, so no allocation here:
        // the entry is updated in place and keeps the AuthInfo of the last auth revision it was asked for.
        entry.ExpiresAt = now + _ttl.Ticks;
        var info = entry.Info;
        if (info is null || info.Revision != currentRevision)
        {
            info = new AuthInfo(entry.Username, currentRevision);
            entry.Info = info;
        }

        return info;
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

    private sealed class Entry(string username, long expiresAt)
    {
        private long _expiresAt = expiresAt;

        public string Username { get; } = username;

        /// <summary>UTC ticks after which the token is invalid.</summary>
        public long ExpiresAt
        {
            get => Volatile.Read(ref _expiresAt);
            set => Volatile.Write(ref _expiresAt, value);
        }

        public AuthInfo? Info { get; set; }
    }
}
