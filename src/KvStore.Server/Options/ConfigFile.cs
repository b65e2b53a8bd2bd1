namespace KvStore.Server.Options;

/// <summary>
/// Reads etcd's YAML configuration file (--config-file). Only the subset etcd's own sample file uses is understood:
/// "key: value" pairs, comments, quoted strings, lists ("[a, b]" or "- item" lines, joined with commas) and the two nested
/// maps client-transport-security / peer-transport-security. Keys are etcd's flag names.
/// </summary>
internal static class ConfigFile
{
    private static readonly Dictionary<string, string> PeerSecurityNames = new(StringComparer.Ordinal)
    {
        ["cert-file"] = "peer-cert-file",
        ["key-file"] = "peer-key-file",
        ["client-cert-auth"] = "peer-client-cert-auth",
        ["trusted-ca-file"] = "peer-trusted-ca-file",
        ["auto-tls"] = "peer-auto-tls",
        ["crl-file"] = "peer-crl-file",
        ["allowed-cn"] = "peer-cert-allowed-cn",
        ["allowed-hostname"] = "peer-cert-allowed-hostname",
        ["client-cert-file"] = "peer-client-cert-file",
        ["client-key-file"] = "peer-client-key-file",
    };

    private static readonly Dictionary<string, string> ClientSecurityNames = new(StringComparer.Ordinal)
    {
        ["cert-file"] = "cert-file",
        ["key-file"] = "key-file",
        ["client-cert-auth"] = "client-cert-auth",
        ["trusted-ca-file"] = "trusted-ca-file",
        ["auto-tls"] = "auto-tls",
        ["crl-file"] = "client-crl-file",
        ["allowed-hostname"] = "client-cert-allowed-hostname",
        ["client-cert-file"] = "client-cert-file",
        ["client-key-file"] = "client-key-file",
    };

    /// <summary>Loads the file as flag name → value.</summary>
    public static Dictionary<string, string> Load(string path)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OptionsException($"error verifying flags, cannot read config file {path}: {e.Message}", e);
        }

        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        string? section = null;
        string? listKey = null;
        var listItems = new List<string>();

        void FlushList()
        {
            if (listKey is not null && listItems.Count > 0)
            {
                values[listKey] = string.Join(',', listItems);
            }

            listKey = null;
            listItems.Clear();
        }

        for (var n = 0; n < lines.Length; n++)
        {
            var line = StripComment(lines[n]).TrimEnd();
            if (line.Trim().Length == 0 || line.Trim() == "---")
            {
                continue;
            }

            var indent = line.Length - line.TrimStart().Length;
            var content = line.Trim();
            if (content.StartsWith("- ", StringComparison.Ordinal) || content == "-")
            {
                if (listKey is null)
                {
                    throw new OptionsException($"error verifying flags, config file {path}:{n + 1}: unexpected list item");
                }

                listItems.Add(Unquote(content[1..].Trim()));
                continue;
            }

            var colon = content.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw new OptionsException($"error verifying flags, config file {path}:{n + 1}: expected \"key: value\"");
            }

            FlushList();
            var key = content[..colon].Trim();
            var value = content[(colon + 1)..].Trim();
            if (indent == 0)
            {
                section = null;
            }

            string flag;
            if (indent > 0 && section is not null)
            {
                var names = section == "peer-transport-security" ? PeerSecurityNames : ClientSecurityNames;
                if (!names.TryGetValue(key, out flag!))
                {
                    throw new OptionsException($"error verifying flags, config file {path}:{n + 1}: unknown field \"{section}.{key}\"");
                }
            }
            else
            {
                flag = key;
            }

            if (value.Length == 0)
            {
                if (key is "client-transport-security" or "peer-transport-security")
                {
                    section = key;
                }
                else
                {
                    listKey = flag;
                }

                continue;
            }

            if (value is "~" or "null")
            {
                continue;
            }

            if (value.StartsWith('[') && value.EndsWith(']'))
            {
                value = string.Join(',', value[1..^1].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(Unquote));
            }
            else
            {
                value = Unquote(value);
            }

            values[flag] = value;
        }

        FlushList();
        return values;
    }

    private static string StripComment(string line)
    {
        var quote = '\0';
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quote != '\0')
            {
                if (c == quote)
                {
                    quote = '\0';
                }
            }
            else if (c is '"' or '\'')
            {
                quote = c;
            }
            else if (c == '#' && (i == 0 || char.IsWhiteSpace(line[i - 1])))
            {
                return line[..i];
            }
        }

        return line;
    }

    private static string Unquote(string value) =>
        value.Length >= 2 && ((value[0] == '"' && value[^1] == '"') || (value[0] == '\'' && value[^1] == '\'')) ? value[1..^1] : value;
}
