using System.Runtime.CompilerServices;

namespace KvStore.Raft;

/// <summary>Formats a log line only when a logger is attached, so tracing costs nothing in production or the simulator.</summary>
[InterpolatedStringHandler]
internal ref struct RaftLogHandler
{
    private DefaultInterpolatedStringHandler _inner;

    public RaftLogHandler(int literalLength, int formattedCount, RaftNode node, out bool isEnabled)
    {
        isEnabled = node.HasLogger;
        _inner = isEnabled ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
    }

    public void AppendLiteral(string value) => _inner.AppendLiteral(value);

    public void AppendFormatted<T>(T value) => _inner.AppendFormatted(value);

    public string ToStringAndClear() => _inner.ToStringAndClear();
}
