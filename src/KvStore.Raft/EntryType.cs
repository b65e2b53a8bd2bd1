namespace KvStore.Raft;

/// <summary>What an <see cref="Entry"/> carries.</summary>
public enum EntryType
{
    /// <summary>Application data (or empty: the no-op a new leader appends).</summary>
    Normal = 0,

    /// <summary>An encoded <see cref="ConfChange"/>; the core applies it when the entry is applied.</summary>
    ConfChange = 1,
}
