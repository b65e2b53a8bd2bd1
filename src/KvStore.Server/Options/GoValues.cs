using System.Globalization;

namespace KvStore.Server.Options;

/// <summary>Parsers for values written as Go's flag package accepts them.</summary>
internal static class GoValues
{
    /// <summary>Go's strconv.ParseBool.</summary>
    public static bool TryParseBool(string text, out bool value)
    {
        switch (text)
        {
            case "1" or "t" or "T" or "true" or "TRUE" or "True":
                value = true;
                return true;
            case "0" or "f" or "F" or "false" or "FALSE" or "False":
                value = false;
                return true;
            default:
                value = false;
                return false;
        }
    }

    /// <summary>Go's strconv.ParseInt(text, 0, 64): decimal, 0x hex, 0o/0 octal, 0b binary, optional sign, underscores after a prefix.</summary>
    public static bool TryParseInt(string text, out long value)
    {
        value = 0;
        if (text.Length == 0)
        {
            return false;
        }

        var negative = false;
        var body = text;
        if (body[0] is '+' or '-')
        {
            negative = body[0] == '-';
            body = body[1..];
        }

        if (!TryParseUint(body, out var magnitude))
        {
            return false;
        }

        if (negative)
        {
            if (magnitude > (ulong)long.MaxValue + 1)
            {
                return false;
            }

            value = unchecked(-(long)magnitude);
            return true;
        }

        if (magnitude > long.MaxValue)
        {
            return false;
        }

        value = (long)magnitude;
        return true;
    }

    /// <summary>Go's strconv.ParseUint(text, 0, 64).</summary>
    public static bool TryParseUint(string text, out ulong value)
    {
        value = 0;
        if (text.Length == 0)
        {
            return false;
        }

        var numberBase = 10;
        var digits = text;
        if (digits.Length > 1 && digits[0] == '0')
        {
            switch (digits[1])
            {
                case 'x' or 'X':
                    numberBase = 16;
                    digits = digits[2..];
                    break;
                case 'o' or 'O':
                    numberBase = 8;
                    digits = digits[2..];
                    break;
                case 'b' or 'B':
                    numberBase = 2;
                    digits = digits[2..];
                    break;
                default:
                    numberBase = 8;
                    digits = digits[1..];
                    break;
            }

            digits = digits.Replace("_", string.Empty, StringComparison.Ordinal);
        }

        if (digits.Length == 0)
        {
            return false;
        }

        ulong result = 0;
        foreach (var c in digits)
        {
            int digit = c switch
            {
                >= '0' and <= '9' => c - '0',
                >= 'a' and <= 'f' => c - 'a' + 10,
                >= 'A' and <= 'F' => c - 'A' + 10,
                _ => 99,
            };
            if (digit >= numberBase)
            {
                return false;
            }

            try
            {
                result = checked((result * (ulong)numberBase) + (ulong)digit);
            }
            catch (OverflowException)
            {
                return false;
            }
        }

        value = result;
        return true;
    }

    /// <summary>Go's time.ParseDuration ("300ms", "-1.5h", "2h45m"; a bare "0" is allowed).</summary>
    public static bool TryParseDuration(string text, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        if (text.Length == 0)
        {
            return false;
        }

        var s = text;
        var negative = false;
        if (s[0] is '+' or '-')
        {
            negative = s[0] == '-';
            s = s[1..];
        }

        if (s == "0")
        {
            return true;
        }

        if (s.Length == 0)
        {
            return false;
        }

        double totalNanoseconds = 0;
        var i = 0;
        while (i < s.Length)
        {
            var start = i;
            while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '.'))
            {
                i++;
            }

            if (start == i || !double.TryParse(s.AsSpan(start, i - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
            {
                return false;
            }

            var unitStart = i;
            while (i < s.Length && !char.IsAsciiDigit(s[i]) && s[i] != '.')
            {
                i++;
            }

            double unit = s[unitStart..i] switch
            {
                "ns" => 1,
                "us" or "µs" or "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => -1,
            };
            if (unit < 0)
            {
                return false;
            }

            totalNanoseconds += number * unit;
        }

        value = TimeSpan.FromTicks((long)(totalNanoseconds / 100) * (negative ? -1 : 1));
        return true;
    }

    /// <summary>A comma-separated URL list as etcd's types.NewURLs accepts it: scheme http/https/unix/unixs and a host:port.</summary>
    public static bool TryParseUrls(string text, out IReadOnlyList<Uri> urls, out string error)
    {
        var list = new List<Uri>();
        urls = list;
        error = string.Empty;
        if (text.Length == 0)
        {
            return true;
        }

        foreach (var part in text.Split(','))
        {
            var trimmed = part.Trim();
            if (!Uri.TryCreate(trimmed, UriKind.Absolute, out var uri))
            {
                error = $"parse \"{trimmed}\": invalid URL";
                return false;
            }

            if (uri.Scheme is not ("http" or "https" or "unix" or "unixs"))
            {
                error = $"URL scheme must be http, https, unix, or unixs: {trimmed}";
                return false;
            }

            if (uri.Scheme is "http" or "https" && (!trimmed.Contains(':', StringComparison.Ordinal) || uri.IsDefaultPort && !HasExplicitPort(trimmed)))
            {
                error = $"URL address does not have the form \"host:port\": {trimmed}";
                return false;
            }

            if (uri.AbsolutePath.Length > 1)
            {
                error = $"URL must not contain a path: {trimmed}";
                return false;
            }

            list.Add(uri);
        }

        return true;
    }

    private static bool HasExplicitPort(string url)
    {
        var hostStart = url.IndexOf("//", StringComparison.Ordinal);
        var host = hostStart >= 0 ? url[(hostStart + 2)..] : url;
        var slash = host.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0)
        {
            host = host[..slash];
        }

        var bracket = host.LastIndexOf(']');
        var colon = host.LastIndexOf(':');
        return colon > bracket && colon < host.Length - 1;
    }
}
