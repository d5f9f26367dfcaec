using System.Runtime.CompilerServices;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// The 64-bit user_data of every SQE: [kind:8][generation:24][slot:32]. A slot is an index in the
/// reactor's owner table; its generation advances each time the slot is freed, so a completion that
/// arrives for a slot closed and reused since carries an old generation and is dropped, never
/// delivered to the new owner. A raw fd is never used: fds are reused by the kernel immediately.
/// </summary>
internal readonly record struct UserData(byte Kind, uint Generation, uint Slot)
{
    public const int GenerationBits = 24;
    public const uint GenerationMask = (1u << GenerationBits) - 1;

    /// <summary>user_data 0 marks fire-and-forget SQEs whose completion carries nothing to act on.</summary>
    public const ulong None = 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Encode(byte kind, uint generation, uint slot)
        => ((ulong)kind << 56) | ((ulong)(generation & GenerationMask) << 32) | slot;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static UserData Decode(ulong value)
        => new((byte)(value >> 56), (uint)(value >> 32) & GenerationMask, (uint)value);

    public ulong Value => Encode(Kind, Generation, Slot);
}
