namespace KvStore.Server.Auth;

/// <summary>
/// Issues and checks the tokens clients send as "token" metadata after Authenticate (etcd's TokenProvider).
/// <see cref="Assign"/> runs on every member when the Authenticate entry is applied; the rest is member-local.
/// </summary>
public interface ITokenProvider
{
    /// <summary>Random part of a simple token, chosen by the proposer before proposing (empty for JWT).</summary>
    string NewTokenPrefix();

    /// <summary>The token for a successful Authenticate applied at log <paramref name="index"/>.</summary>
    string Assign(string username, ulong revision, string prefix, ulong index);

    /// <summary>Who the token belongs to, or null if it is unknown, expired or forged.</summary>
    AuthInfo? Info(string token, ulong currentRevision);

    /// <summary>Drops the user's tokens (user deleted or password changed).</summary>
    void InvalidateUser(string username);

    /// <summary>Drops every token (auth disabled).</summary>
    void InvalidateAll();
}
