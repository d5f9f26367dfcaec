using System.Buffers.Binary;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>
/// The byte stream one connection sends: byte p is byte (p mod 8) of SplitMix64(seed, p / 8). Random
/// access (writer and reader need no shared state), and every connection's seed differs, so a byte that
/// leaked from another connection, a stale buffer, a drop, a repeat or a reorder all show up as a
/// mismatch at a known offset.
/// </summary>
internal static class Pattern
{
    [ThreadStatic]
    private static byte[]? t_scratch;

    public static ulong SeedFor(ulong runSeed, long connectionId) => Mix(runSeed ^ 0x5DEECE66DUL, (ulong)connectionId);

    public static void Fill(Span<byte> destination, ulong seed, long offset)
    {
        while (!destination.IsEmpty)
        {
            ulong block = (ulong)offset >> 3;
            int within = (int)(offset & 7);
            ulong value = Mix(seed, block);
            if (within == 0 && destination.Length >= 8)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(destination, value);
                destination = destination[8..];
                offset += 8;
                continue;
            }

            int n = Math.Min(8 - within, destination.Length);
            for (int i = 0; i < n; i++)
            {
                destination[i] = (byte)(value >> (8 * (within + i)));
            }

            destination = destination[n..];
            offset += n;
        }
    }

    /// <summary>The absolute offset of the first byte of <paramref name="data"/> that differs from the stream, or -1.</summary>
    public static long FirstMismatch(ReadOnlySpan<byte> data, ulong seed, long offset)
    {
        byte[] scratch = t_scratch ??= new byte[64 * 1024];
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, scratch.Length);
            Fill(scratch.AsSpan(0, n), seed, offset);
            int same = data[..n].CommonPrefixLength(scratch.AsSpan(0, n));
            if (same != n)
            {
                return offset + same;
            }

            data = data[n..];
            offset += n;
        }

        return -1;
    }

    private static ulong Mix(ulong seed, ulong block)
    {
        ulong z = seed + ((block + 1) * 0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
