using System.Buffers.Binary;
using System.Numerics;

namespace KvStore.Storage;

/// <summary>
/// CRC-32C (Castagnoli), the same function as Go's crc32.MakeTable(crc32.Castagnoli):
/// start at all ones, reflected polynomial 0x82F63B78, invert at the end. Hardware-accelerated through
/// <see cref="BitOperations.Crc32C(uint, ulong)"/> where the CPU has it.
/// </summary>
internal struct Crc32C
{
    private uint _state;

    public static Crc32C Create() => new() { _state = uint.MaxValue };

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var crc = Create();
        crc.Append(data);
        return crc.Current;
    }

    public readonly uint Current => ~_state;

    public void Append(ReadOnlySpan<byte> data)
    {
        var s = _state;
        while (data.Length >= 8)
        {
            s = BitOperations.Crc32C(s, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }

        foreach (var b in data)
        {
            s = BitOperations.Crc32C(s, b);
        }

        _state = s;
    }
}
