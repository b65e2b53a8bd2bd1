using System.Globalization;

namespace KvStore.Server.Contract;

/// <summary>Sizes as etcd prints them in logs and etcdctl in tables: go-humanize's Bytes (SI units).</summary>
public static class HumanBytes
{
    /// <summary>"9 B", "1.5 kB", "24 MB": one decimal below 10, none above (Go's %.0f rounds halves to even).</summary>
    public static string Format(long bytes)
    {
        if (bytes < 10)
        {
            return string.Create(CultureInfo.InvariantCulture, $"{bytes} B");
        }

        string[] units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
        var exponent = (int)Math.Floor(Math.Log(bytes) / Math.Log(1000));
        var value = Math.Floor((bytes / Math.Pow(1000, exponent) * 10) + 0.5) / 10;
        var text = value < 10
            ? value.ToString("F1", CultureInfo.InvariantCulture)
            : Math.Round(value, MidpointRounding.ToEven).ToString("F0", CultureInfo.InvariantCulture);
        return $"{text} {units[exponent]}";
    }
}
