using Microsoft.Extensions.Logging;

namespace KvStore.Server.Lease;

/// <summary>Lease log messages (event IDs 4000-4099).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 4000, Level = LogLevel.Information, Message = "Recovered {Leases} leases with {Keys} attached keys")]
    public static partial void Recovered(ILogger logger, int leases, int keys);

    [LoggerMessage(EventId = 4001, Level = LogLevel.Debug, Message = "Revoked lease {LeaseId:x16}, deleting {Keys} keys")]
    public static partial void Revoked(ILogger logger, long leaseId, int keys);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Information, Message = "Lessor promoted: {Leases} leases extended")]
    public static partial void Promoted(ILogger logger, int leases);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug, Message = "Lease {LeaseId:x16} expired; proposing revoke")]
    public static partial void Expired(ILogger logger, long leaseId);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Warning, Message = "Proposing the revoke of expired lease {LeaseId:x16} failed")]
    public static partial void RevokeProposalFailed(ILogger logger, long leaseId, Exception exception);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Error, Message = "Lease expiry check failed")]
    public static partial void ExpiryCheckFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Debug, Message = "Lease keep-alive stream ended")]
    public static partial void KeepAliveEnded(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Warning, Message = "Proposing a checkpoint of {Leases} lease TTLs failed")]
    public static partial void CheckpointProposalFailed(ILogger logger, int leases, Exception exception);
}
