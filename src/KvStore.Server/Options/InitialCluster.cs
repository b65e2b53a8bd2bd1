namespace KvStore.Server.Options;

/// <summary>Parses --initial-cluster ("name1=url1,name1=url2,name2=url3") into member name → peer URLs.</summary>
public static class InitialCluster
{
    /// <summary>Parses the flag value; a name may appear several times (several peer URLs).</summary>
    /// <exception cref="OptionsException">An entry is not "name=url" or a URL is invalid.</exception>
    public static IReadOnlyDictionary<string, IReadOnlyList<string>> Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var entry in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = entry.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new OptionsException($"error verifying flags, --initial-cluster: \"{entry}\" is not of the form name=url");
            }

            var name = entry[..eq];
            var url = entry[(eq + 1)..];
            if (!GoValues.TryParseUrls(url, out var urls, out var error))
            {
                throw new OptionsException($"error verifying flags, --initial-cluster: {error}");
            }

            if (!result.TryGetValue(name, out var list))
            {
                list = [];
                result[name] = list;
            }

            list.Add(FlagParser.UrlText(urls[0]));
        }

        return result.ToDictionary(p => p.Key, p => (IReadOnlyList<string>)p.Value, StringComparer.Ordinal);
    }
}
