using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;

namespace Kestrel.Transport.IoUring.Tests.Abi;

/// <summary>One field of a C# mirror struct, as the runtime lays it out.</summary>
/// <param name="IsSigned">Signedness for integer fields; null for pointers, structs and fixed buffers.</param>
/// <param name="ElementSize">For fixed buffers (C arrays): the size of one element.</param>
internal sealed record ManagedField(string Name, int Offset, int Size, bool? IsSigned, int? ElementSize);

/// <summary>A C# mirror struct; its C name is its C# name.</summary>
internal sealed record ManagedStruct(string Name, int Size, int MarshalSize, bool ContainsReferences, IReadOnlyList<ManagedField> Fields);

/// <summary>A constant of IoUringNative or Libc, widened to Int128, with the width and signedness of its C# type.</summary>
internal sealed record ManagedConstant(string Owner, string Name, Int128 Value, int Bits, bool IsSigned, string TypeName);

/// <summary>
/// Everything the interop layer claims about the kernel and libc ABI, found by reflection so that a
/// struct, field or constant added later is checked without anyone having to list it here.
/// </summary>
internal static class ManagedAbi
{
    /// <summary>The classes whose public constants mirror C names.</summary>
    public static readonly Type[] ConstantClasses = [typeof(IoUringNative), typeof(Libc)];

    /// <summary>
    /// The mirrors that exist today. Reflection finds every struct of the Interop namespace; this list
    /// only guards the reflection itself (a filter that silently found nothing would check nothing).
    /// </summary>
    public static readonly string[] KnownStructNames =
    [
        "io_uring_sqe", "io_uring_cqe", "io_sqring_offsets", "io_cqring_offsets", "io_uring_params",
        "io_uring_probe_op", "io_uring_probe", "io_uring_buf", "io_uring_buf_ring", "io_uring_buf_reg",
        "io_uring_getevents_arg", "io_uring_rsrc_update", "__kernel_timespec",
        "iovec", "msghdr", "linger", "sockaddr_storage",
    ];

    private static readonly MethodInfo s_sizeOf = typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!;
    private static readonly MethodInfo s_containsReferences = typeof(RuntimeHelpers).GetMethod(nameof(RuntimeHelpers.IsReferenceOrContainsReferences))!;

    public static IReadOnlyList<ManagedStruct> Structs { get; } = FindStructs();

    private static readonly (List<ManagedConstant> Constants, List<string> Unsupported) s_constants = FindConstants();

    public static IReadOnlyList<ManagedConstant> Constants => s_constants.Constants;

    /// <summary>Public static fields of the constant classes whose type cannot be compared with a C integer.</summary>
    public static IReadOnlyList<string> UnsupportedConstants => s_constants.Unsupported;

    private static List<ManagedStruct> FindStructs()
    {
        string ns = typeof(io_uring_sqe).Namespace!;
        return typeof(io_uring_sqe).Assembly.GetTypes()
            .Where(t => t.IsValueType && !t.IsEnum && !t.IsNested && t.Namespace == ns
                && t.GetCustomAttribute<CompilerGeneratedAttribute>() is null)
            .OrderBy(t => t.Name, StringComparer.Ordinal)
            .Select(Describe)
            .ToList();
    }

    private static ManagedStruct Describe(Type type)
    {
        var fields = type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            .Select(f =>
            {
                FixedBufferAttribute? fixedBuffer = f.GetCustomAttribute<FixedBufferAttribute>();
                return new ManagedField(
                    f.Name,
                    (int)Marshal.OffsetOf(type, f.Name),
                    SizeOf(f.FieldType),
                    fixedBuffer is null ? Signedness(f.FieldType) : null,
                    fixedBuffer is null ? null : SizeOf(fixedBuffer.ElementType));
            })
            .OrderBy(f => f.Offset)
            .ThenBy(f => f.Name, StringComparer.Ordinal)
            .ToList();

        bool containsReferences = (bool)s_containsReferences.MakeGenericMethod(type).Invoke(null, null)!;
        int marshalSize = containsReferences ? -1 : Marshal.SizeOf(type);
        return new ManagedStruct(type.Name, SizeOf(type), marshalSize, containsReferences, fields);
    }

    /// <summary>The size the runtime uses (what sizeof(T) gives in unsafe code).</summary>
    private static int SizeOf(Type type)
        => type.IsPointer || type.IsFunctionPointer ? IntPtr.Size : (int)s_sizeOf.MakeGenericMethod(type).Invoke(null, null)!;

    private static bool? Signedness(Type type)
    {
        if (type == typeof(sbyte) || type == typeof(short) || type == typeof(int) || type == typeof(long) || type == typeof(nint))
        {
            return true;
        }

        if (type == typeof(byte) || type == typeof(ushort) || type == typeof(uint) || type == typeof(ulong) || type == typeof(nuint))
        {
            return false;
        }

        return null;
    }

    private static (List<ManagedConstant>, List<string>) FindConstants()
    {
        List<string> unsupported = [];
        List<ManagedConstant> constants = [];
        foreach (Type owner in ConstantClasses)
        {
            // const fields, and static readonly integers such as Libc.MAP_FAILED (not expressible as const).
            foreach (FieldInfo f in owner.GetFields(BindingFlags.Public | BindingFlags.Static).OrderBy(f => f.MetadataToken))
            {
                object? raw = f.IsLiteral ? f.GetRawConstantValue() : f.IsInitOnly ? f.GetValue(null) : null;
                ManagedConstant? constant = raw switch
                {
                    byte v => new(owner.Name, f.Name, v, 8, false, "byte"),
                    sbyte v => new(owner.Name, f.Name, v, 8, true, "sbyte"),
                    ushort v => new(owner.Name, f.Name, v, 16, false, "ushort"),
                    short v => new(owner.Name, f.Name, v, 16, true, "short"),
                    uint v => new(owner.Name, f.Name, v, 32, false, "uint"),
                    int v => new(owner.Name, f.Name, v, 32, true, "int"),
                    ulong v => new(owner.Name, f.Name, v, 64, false, "ulong"),
                    long v => new(owner.Name, f.Name, v, 64, true, "long"),
                    nuint v => new(owner.Name, f.Name, v, IntPtr.Size * 8, false, "nuint"),
                    nint v => new(owner.Name, f.Name, v, IntPtr.Size * 8, true, "nint"),
                    _ => null,
                };

                if (constant is null)
                {
                    unsupported.Add($"{owner.Name}.{f.Name} ({f.FieldType.Name}{(f.IsLiteral || f.IsInitOnly ? "" : ", mutable")})");
                }
                else
                {
                    constants.Add(constant);
                }
            }
        }

        return (constants, unsupported);
    }

    /// <summary>
    /// True when <paramref name="cValue"/> fits the C# type and has the same bit pattern in its width:
    /// (~0U) equals uint.MaxValue, and an enum value printed as INT_MIN equals 1u &lt;&lt; 31.
    /// </summary>
    public static bool SameBits(Int128 cValue, Int128 managedValue, int bits)
    {
        Int128 modulus = Int128.One << bits;
        if (cValue < -(modulus >> 1) || cValue >= modulus)
        {
            return false;
        }

        return Wrap(cValue, modulus) == Wrap(managedValue, modulus);

        static Int128 Wrap(Int128 value, Int128 modulus) => ((value % modulus) + modulus) % modulus;
    }
}
