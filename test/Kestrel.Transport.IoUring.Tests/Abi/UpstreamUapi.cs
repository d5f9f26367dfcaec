namespace Kestrel.Transport.IoUring.Tests.Abi;

/// <summary>A uapi constant and the kernel release whose headers first have it.</summary>
internal sealed record UpstreamConstant(string Name, long Value, int Major, int Minor)
{
    public int VersionCode => (Major << 16) + (Minor << 8);

    public string Version => $"{Major}.{Minor}";
}

/// <summary>
/// A struct field whose header name depends on the kernel release: <see cref="HeaderName"/> from
/// Major.Minor on, <see cref="HeaderNameBefore"/> (same slot) before it, or no field at all if null.
/// </summary>
internal sealed record UpstreamField(string Struct, string Field, string HeaderName, int Major, int Minor, string? HeaderNameBefore, int Offset, int Size)
{
    public int VersionCode => (Major << 16) + (Minor << 8);

    public string Version => $"{Major}.{Minor}";
}

/// <summary>
/// The parts of &lt;linux/io_uring.h&gt; that the interop uses but older headers (Debian 12 ships 6.1)
/// lack. The generated C program checks a name against the machine's headers when they have it
/// (a macro that is defined, or headers at least as new as the release below) and the test checks
/// the C# value against this table when they do not. Where the headers have a name the table is
/// checked against them too, so a wrong row fails on a machine with newer headers.
///
/// Values are from torvalds/linux include/uapi/linux/io_uring.h (enum values also confirmed in the
/// BTF of a running 6.18 kernel, /sys/kernel/btf/vmlinux). Add a row here when the interop gains a
/// name newer than the oldest headers CI builds with; the C program then compiles again.
/// </summary>
internal static class UpstreamUapi
{
    public static readonly UpstreamConstant[] Constants =
    [
        // io_uring_params.flags (macros)
        new("IORING_SETUP_NO_MMAP", 1L << 14, 6, 5),
        new("IORING_SETUP_REGISTERED_FD_ONLY", 1L << 15, 6, 5),
        new("IORING_SETUP_NO_SQARRAY", 1L << 16, 6, 6),

        // io_uring_params.features (macros)
        new("IORING_FEAT_REG_REG_RING", 1L << 13, 6, 3),
        new("IORING_FEAT_RECVSEND_BUNDLE", 1L << 14, 6, 10),
        new("IORING_FEAT_MIN_TIMEOUT", 1L << 15, 6, 12),

        // enum io_uring_op (enumerators: found by release, not #ifdef)
        new("IORING_OP_READ_MULTISHOT", 49, 6, 7),
        new("IORING_OP_FIXED_FD_INSTALL", 54, 6, 8),
        new("IORING_OP_BIND", 56, 6, 11),
        new("IORING_OP_LISTEN", 57, 6, 11),
        new("IORING_OP_PIPE", 62, 6, 16),

        // cqe->flags (macro)
        new("IORING_CQE_F_BUF_MORE", 1L << 4, 6, 12),

        // send/recv flags in sqe->ioprio (macro)
        new("IORING_RECVSEND_BUNDLE", 1L << 4, 6, 10),

        // accept flags in sqe->ioprio (macros)
        new("IORING_ACCEPT_DONTWAIT", 1L << 1, 6, 10),
        new("IORING_ACCEPT_POLL_FIRST", 1L << 2, 6, 10),

        // enum io_uring_register_pbuf_ring_flags (enumerators)
        new("IOU_PBUF_RING_MMAP", 1, 6, 4),
        new("IOU_PBUF_RING_INC", 2, 6, 12),

        // enum io_uring_register_op (enumerator)
        new("IORING_REGISTER_USE_REGISTERED_RING", 1L << 31, 6, 3),
    ];

    public static readonly UpstreamField[] Fields =
    [
        // Linux 6.5 (IORING_SETUP_NO_MMAP) renamed resv2 to user_addr.
        new("io_sqring_offsets", "user_addr", "user_addr", 6, 5, "resv2", 32, 8),
        new("io_cqring_offsets", "user_addr", "user_addr", 6, 5, "resv2", 32, 8),

        // Linux 6.4 (IOU_PBUF_RING_MMAP) renamed pad to flags.
        new("io_uring_buf_reg", "flags", "flags", 6, 4, "pad", 14, 2),

        // Linux 6.12 (IORING_FEAT_MIN_TIMEOUT) renamed pad to min_wait_usec; the C# mirror keeps pad.
        new("io_uring_getevents_arg", "pad", "min_wait_usec", 6, 12, "pad", 12, 4),
    ];

    /// <summary>
    /// Integer fields whose C# signedness deliberately differs from the header's; size and offset are
    /// still checked. Key: "struct.field".
    /// </summary>
    public static readonly Dictionary<string, string> SignednessExceptions = new(StringComparer.Ordinal)
    {
        // The uapi type has been __kernel_rwf_t (int) in some releases and __u32 in others (6.1, 6.18);
        // the C# mirror keeps int, the type of RWF_* flags. Same 32 bits either way.
        ["io_uring_sqe.rw_flags"] = "uapi type is __u32 or __kernel_rwf_t depending on the release",
    };

    public static UpstreamConstant? FindConstant(string name) => Array.Find(Constants, c => c.Name == name);

    public static UpstreamField? FindField(string structName, string field)
        => Array.Find(Fields, f => f.Struct == structName && f.Field == field);
}
