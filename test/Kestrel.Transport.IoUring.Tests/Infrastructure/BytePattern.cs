using System.Net;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// A deterministic byte stream for verifying large bodies without keeping them: byte i is
/// Period-periodic pseudo-random data, and the period is a prime, so a dropped, repeated or reordered
/// block of any power-of-two size shows up as a mismatch at a known offset.
/// </summary>
public static class BytePattern
{
    private const int Period = 65521;
    private static readonly byte[] s_bytes = CreateBytes();

    private static byte[] CreateBytes()
    {
        byte[] bytes = new byte[Period * 2];
        new Random(20240917).NextBytes(bytes.AsSpan(0, Period));
        bytes.AsSpan(0, Period).CopyTo(bytes.AsSpan(Period));
        return bytes;
    }

    /// <summary>Fills <paramref name="destination"/> with the stream's bytes starting at <paramref name="offset"/>.</summary>
    public static void Fill(Span<byte> destination, long offset)
    {
        while (!destination.IsEmpty)
        {
            int n = Math.Min(destination.Length, Period);
            s_bytes.AsSpan((int)(offset % Period), n).CopyTo(destination);
            destination = destination[n..];
            offset += n;
        }
    }

    /// <summary>The absolute offset of the first byte of <paramref name="data"/> that differs from the stream, or -1.</summary>
    public static long FirstMismatch(ReadOnlySpan<byte> data, long offset)
    {
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, Period);
            int diff = data[..n].CommonPrefixLength(s_bytes.AsSpan((int)(offset % Period), n));
            if (diff != n)
            {
                return offset + diff;
            }

            data = data[n..];
            offset += n;
        }

        return -1;
    }

    /// <summary>Reads <paramref name="stream"/> to its end, checking every byte; returns the byte count.</summary>
    public static async Task<long> VerifyAsync(Stream stream, CancellationToken cancellationToken = default)
    {
        byte[] buffer = new byte[64 * 1024];
        long total = 0;
        int n;
        while ((n = await stream.ReadAsync(buffer, cancellationToken)) != 0)
        {
            long mismatch = FirstMismatch(buffer.AsSpan(0, n), total);
            if (mismatch >= 0)
            {
                throw new InvalidDataException($"Body byte {mismatch} differs from the pattern.");
            }

            total += n;
        }

        return total;
    }

    /// <summary>Writes <paramref name="length"/> pattern bytes to <paramref name="stream"/> in chunks of <paramref name="chunkSize"/>.</summary>
    public static async Task WriteAsync(Stream stream, long length, int chunkSize = 64 * 1024, CancellationToken cancellationToken = default)
    {
        byte[] buffer = new byte[chunkSize];
        for (long offset = 0; offset < length; offset += chunkSize)
        {
            int n = (int)Math.Min(chunkSize, length - offset);
            Fill(buffer.AsSpan(0, n), offset);
            await stream.WriteAsync(buffer.AsMemory(0, n), cancellationToken);
        }
    }
}

/// <summary>An HttpClient request body of pattern bytes, streamed (never held in memory).</summary>
public sealed class PatternContent(long bodyLength, bool chunked = false) : HttpContent
{
    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        => BytePattern.WriteAsync(stream, bodyLength);

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        => BytePattern.WriteAsync(stream, bodyLength, cancellationToken: cancellationToken);

    protected override bool TryComputeLength(out long length)
    {
        length = bodyLength;
        return !chunked;
    }
}
