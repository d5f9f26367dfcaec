using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Interop;

// Mirrors of <linux/io_uring.h> (uapi). Names are the kernel's, verbatim, so that a reader can
// hold this file next to the header. Union members are overlapping fields at the same offset.
// AbiTests compiles a C program against the machine's headers and asserts every size and offset
// below; fields newer than Debian 12's 6.1 headers are checked against upstream values instead.

/// <summary>struct io_uring_sqe (64 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct io_uring_sqe
{
    [FieldOffset(0)] public byte opcode;
    [FieldOffset(1)] public byte flags;
    [FieldOffset(2)] public ushort ioprio;
    [FieldOffset(4)] public int fd;
    [FieldOffset(8)] public ulong off;
    [FieldOffset(8)] public ulong addr2;
    [FieldOffset(16)] public ulong addr;
    [FieldOffset(16)] public ulong splice_off_in;
    [FieldOffset(24)] public uint len;
    [FieldOffset(28)] public int rw_flags;
    [FieldOffset(28)] public uint fsync_flags;
    [FieldOffset(28)] public ushort poll_events;
    [FieldOffset(28)] public uint poll32_events;
    [FieldOffset(28)] public uint timeout_flags;
    [FieldOffset(28)] public uint accept_flags;
    [FieldOffset(28)] public uint cancel_flags;
    [FieldOffset(28)] public uint open_flags;
    [FieldOffset(28)] public uint msg_flags;
    [FieldOffset(28)] public uint splice_flags;
    [FieldOffset(28)] public uint msg_ring_flags;
    [FieldOffset(32)] public ulong user_data;
    [FieldOffset(40)] public ushort buf_index;
    [FieldOffset(40)] public ushort buf_group;
    [FieldOffset(42)] public ushort personality;
    [FieldOffset(44)] public int splice_fd_in;
    [FieldOffset(44)] public uint file_index;
    [FieldOffset(44)] public ushort addr_len;
    [FieldOffset(48)] public ulong addr3;
    [FieldOffset(56)] public ulong __pad2;
}

/// <summary>struct io_uring_cqe (16 bytes without IORING_SETUP_CQE32).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_cqe
{
    public ulong user_data;
    public int res;
    public uint flags;
}

/// <summary>struct io_sqring_offsets.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_sqring_offsets
{
    public uint head;
    public uint tail;
    public uint ring_mask;
    public uint ring_entries;
    public uint flags;
    public uint dropped;
    public uint array;
    public uint resv1;
    public ulong user_addr;
}

/// <summary>struct io_cqring_offsets.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_cqring_offsets
{
    public uint head;
    public uint tail;
    public uint ring_mask;
    public uint ring_entries;
    public uint overflow;
    public uint cqes;
    public uint flags;
    public uint resv1;
    public ulong user_addr;
}

/// <summary>struct io_uring_params, passed to io_uring_setup(2).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct io_uring_params
{
    public uint sq_entries;
    public uint cq_entries;
    public uint flags;
    public uint sq_thread_cpu;
    public uint sq_thread_idle;
    public uint features;
    public uint wq_fd;
    public fixed uint resv[3];
    public io_sqring_offsets sq_off;
    public io_cqring_offsets cq_off;
}

/// <summary>struct io_uring_probe_op.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_probe_op
{
    public byte op;
    public byte resv;
    public ushort flags;
    public uint resv2;
}

/// <summary>struct io_uring_probe; followed in memory by ops_len io_uring_probe_op entries.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct io_uring_probe
{
    public byte last_op;
    public byte ops_len;
    public ushort resv;
    public fixed uint resv2[3];
}

/// <summary>struct io_uring_buf: one entry of a provided buffer ring.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_buf
{
    public ulong addr;
    public uint len;
    public ushort bid;
    public ushort resv;
}

/// <summary>
/// struct io_uring_buf_ring: the head of a provided buffer ring. Its tail aliases the resv field of
/// bufs[0], so the ring is an array of io_uring_buf whose first entry's last 2 bytes are the tail.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct io_uring_buf_ring
{
    [FieldOffset(0)] public ulong resv1;
    [FieldOffset(8)] public uint resv2;
    [FieldOffset(12)] public ushort resv3;
    [FieldOffset(14)] public ushort tail;
}

/// <summary>struct io_uring_buf_reg, argument of IORING_REGISTER_PBUF_RING.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct io_uring_buf_reg
{
    public ulong ring_addr;
    public uint ring_entries;
    public ushort bgid;
    public ushort flags;
    public fixed ulong resv[3];
}

/// <summary>struct io_uring_getevents_arg, used with IORING_ENTER_EXT_ARG.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_getevents_arg
{
    public ulong sigmask;
    public uint sigmask_sz;
    /// <summary>Named pad in 6.1 headers; min_wait_usec since Linux 6.12.</summary>
    public uint pad;
    public ulong ts;
}

/// <summary>struct io_uring_rsrc_update, argument of IORING_REGISTER_RING_FDS.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_rsrc_update
{
    public uint offset;
    public uint resv;
    public ulong data;
}

/// <summary>struct __kernel_timespec.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct __kernel_timespec
{
    public long tv_sec;
    public long tv_nsec;
}
