using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// Every block of native memory the transport hands to the kernel comes from here, so the blocks still
/// alive can be counted: tests assert the count returns to its baseline (no leak), and a block is freed
/// only by its owner after the last completion that could touch it.
/// </summary>
internal static unsafe class NativeBuffers
{
    private static long s_liveBlocks;
    private static long s_liveBytes;

    /// <summary>Blocks allocated and not yet freed, process-wide.</summary>
    public static long LiveBlocks => Interlocked.Read(ref s_liveBlocks);

    /// <summary>Bytes in <see cref="LiveBlocks"/>.</summary>
    public static long LiveBytes => Interlocked.Read(ref s_liveBytes);

    /// <summary>An unmovable block of <paramref name="size"/> bytes, aligned to <paramref name="alignment"/>, zeroed when asked.</summary>
    public static void* Allocate(nuint size, nuint alignment = 16, bool zero = false)
    {
        void* block = NativeMemory.AlignedAlloc(size, alignment);
        if (zero)
        {
            NativeMemory.Clear(block, size);
        }

        Interlocked.Increment(ref s_liveBlocks);
        Interlocked.Add(ref s_liveBytes, (long)size);
        return block;
    }

    /// <summary>Frees a block from <see cref="Allocate"/>; <paramref name="size"/> is the size it was allocated with.</summary>
    public static void Free(void* block, nuint size)
    {
        if (block is null)
        {
            return;
        }

        NativeMemory.AlignedFree(block);
        Interlocked.Decrement(ref s_liveBlocks);
        Interlocked.Add(ref s_liveBytes, -(long)size);
    }
}
