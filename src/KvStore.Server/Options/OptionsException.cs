namespace KvStore.Server.Options;

/// <summary>The configuration is unusable; the process prints <see cref="Exception.Message"/> and exits with <see cref="ExitCode"/>.</summary>
public sealed class OptionsException : Exception
{
    public OptionsException()
    {
    }

    public OptionsException(string message)
        : base(message)
    {
    }

    public OptionsException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public OptionsException(string message, int exitCode)
        : base(message)
    {
        ExitCode = exitCode;
    }

    /// <summary>Process exit code: 2 for flag syntax errors (as Go's flag package), 1 otherwise (as etcd).</summary>
    public int ExitCode { get; } = 1;
}
