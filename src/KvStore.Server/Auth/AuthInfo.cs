namespace KvStore.Server.Auth;

/// <summary>
/// Who sends a request, as the permission checks see it: the user and the auth store revision their credentials are
/// valid at (a simple token or a certificate: the member's current revision; a JWT: the revision it was issued at).
/// An empty <see cref="Username"/> is a client that sent no credentials.
/// </summary>
/// <param name="Username">The user name, or empty for none.</param>
/// <param name="Revision">Auth store revision the credentials reflect.</param>
public sealed record AuthInfo(string Username, ulong Revision)
{
    /// <summary>A client that sent neither a token nor a usable certificate (etcd: "user name is empty" when auth is on).</summary>
    public static AuthInfo Anonymous { get; } = new(string.Empty, 0);
}
