namespace KvStore.Server.Auth;

/// <summary>bcrypt through BCrypt.Net-Next (the hash format etcd's Go bcrypt reads and writes).</summary>
public static class PasswordHasher
{
    /// <summary>Hashes <paramref name="password"/> at <paramref name="cost"/>: done before proposing, never in the log in clear.</summary>
    public static string Hash(string password, int cost) => BCrypt.Net.BCrypt.HashPassword(password, cost);

    /// <summary>True if <paramref name="password"/> matches <paramref name="hash"/>; a malformed hash never matches.</summary>
    public static bool Verify(string password, string hash)
    {
        try
        {
            return BCrypt.Net.BCrypt.Verify(password, hash);
        }
        catch (BCrypt.Net.SaltParseException)
        {
            return false;
        }
    }
}
