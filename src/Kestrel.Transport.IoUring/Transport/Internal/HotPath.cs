using System.Buffers;
using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Interop;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>The per-operation data movement of a connection, kept apart so it can be benchmarked alone.</summary>
internal static unsafe class HotPath
{
    /// <summary>Copies received bytes out of a kernel buffer into the input pipe (no flush).</summary>
    public static void CopyInto(PipeWriter writer, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            Span<byte> destination = writer.GetSpan(1);
            int n = Math.Min(destination.Length, data.Length);
            data[..n].CopyTo(destination);
            writer.Advance(n);
            data = data[n..];
        }
    }

    /// <summary>
    /// Pins up to <paramref name="max"/> non-empty segments of <paramref name="buffer"/> into
    /// <paramref name="pins"/> and describes them in <paramref name="iovecs"/>; returns how many. What does
    /// not fit goes in a later send, like the rest of a short send. The caller keeps every pin until the
    /// send's completion arrives.
    /// </summary>
    public static int Gather(in ReadOnlySequence<byte> buffer, MemoryHandle[] pins, iovec* iovecs, int max)
    {
        int count = 0;
        foreach (ReadOnlyMemory<byte> segment in buffer)
        {
            if (segment.IsEmpty)
            {
                continue;
            }

            if (count == max)
            {
                break;
            }

            MemoryHandle pin = segment.Pin();
            pins[count] = pin;
            iovecs[count].iov_base = pin.Pointer;
            iovecs[count].iov_len = (nuint)segment.Length;
            count++;
        }

        return count;
    }
}
