using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Interop;

/// <summary>
/// Constants and system calls of &lt;linux/io_uring.h&gt;. Values marked with a kernel version are newer
/// than Debian 12's 6.1 headers; AbiTests checks them against the upstream uapi and the runtime probe
/// decides whether they may be used.
/// </summary>
internal static unsafe partial class IoUringNative
{
    // io_uring_setup(2), io_uring_enter(2), io_uring_register(2): the same numbers on every
    // architecture since Linux 5.1 (the unified syscall table).
    public const long __NR_io_uring_setup = 425;
    public const long __NR_io_uring_enter = 426;
    public const long __NR_io_uring_register = 427;

    // --- io_uring_params.flags (setup) ---
    public const uint IORING_SETUP_IOPOLL = 1u << 0;
    public const uint IORING_SETUP_SQPOLL = 1u << 1;
    public const uint IORING_SETUP_SQ_AFF = 1u << 2;
    public const uint IORING_SETUP_CQSIZE = 1u << 3;
    public const uint IORING_SETUP_CLAMP = 1u << 4;
    public const uint IORING_SETUP_ATTACH_WQ = 1u << 5;
    public const uint IORING_SETUP_R_DISABLED = 1u << 6;
    public const uint IORING_SETUP_SUBMIT_ALL = 1u << 7;
    public const uint IORING_SETUP_COOP_TASKRUN = 1u << 8;
    public const uint IORING_SETUP_TASKRUN_FLAG = 1u << 9;
    public const uint IORING_SETUP_SQE128 = 1u << 10;
    public const uint IORING_SETUP_CQE32 = 1u << 11;
    public const uint IORING_SETUP_SINGLE_ISSUER = 1u << 12;
    public const uint IORING_SETUP_DEFER_TASKRUN = 1u << 13;
    /// <summary>Linux 6.5.</summary>
    public const uint IORING_SETUP_NO_MMAP = 1u << 14;
    /// <summary>Linux 6.5.</summary>
    public const uint IORING_SETUP_REGISTERED_FD_ONLY = 1u << 15;
    /// <summary>Linux 6.6.</summary>
    public const uint IORING_SETUP_NO_SQARRAY = 1u << 16;

    // --- io_uring_enter flags ---
    public const uint IORING_ENTER_GETEVENTS = 1u << 0;
    public const uint IORING_ENTER_SQ_WAKEUP = 1u << 1;
    public const uint IORING_ENTER_SQ_WAIT = 1u << 2;
    public const uint IORING_ENTER_EXT_ARG = 1u << 3;
    public const uint IORING_ENTER_REGISTERED_RING = 1u << 4;

    // --- io_uring_params.features ---
    public const uint IORING_FEAT_SINGLE_MMAP = 1u << 0;
    public const uint IORING_FEAT_NODROP = 1u << 1;
    public const uint IORING_FEAT_SUBMIT_STABLE = 1u << 2;
    public const uint IORING_FEAT_RW_CUR_POS = 1u << 3;
    public const uint IORING_FEAT_CUR_PERSONALITY = 1u << 4;
    public const uint IORING_FEAT_FAST_POLL = 1u << 5;
    public const uint IORING_FEAT_POLL_32BITS = 1u << 6;
    public const uint IORING_FEAT_SQPOLL_NONFIXED = 1u << 7;
    public const uint IORING_FEAT_EXT_ARG = 1u << 8;
    public const uint IORING_FEAT_NATIVE_WORKERS = 1u << 9;
    public const uint IORING_FEAT_RSRC_TAGS = 1u << 10;
    public const uint IORING_FEAT_CQE_SKIP = 1u << 11;
    public const uint IORING_FEAT_LINKED_FILE = 1u << 12;
    /// <summary>Linux 6.3.</summary>
    public const uint IORING_FEAT_REG_REG_RING = 1u << 13;
    /// <summary>Linux 6.10.</summary>
    public const uint IORING_FEAT_RECVSEND_BUNDLE = 1u << 14;
    /// <summary>Linux 6.12.</summary>
    public const uint IORING_FEAT_MIN_TIMEOUT = 1u << 15;

    // --- io_uring_sqe.flags ---
    public const byte IOSQE_FIXED_FILE = 1 << 0;
    public const byte IOSQE_IO_DRAIN = 1 << 1;
    public const byte IOSQE_IO_LINK = 1 << 2;
    public const byte IOSQE_IO_HARDLINK = 1 << 3;
    public const byte IOSQE_ASYNC = 1 << 4;
    public const byte IOSQE_BUFFER_SELECT = 1 << 5;
    public const byte IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

    // --- enum io_uring_op ---
    public const byte IORING_OP_NOP = 0;
    public const byte IORING_OP_READV = 1;
    public const byte IORING_OP_WRITEV = 2;
    public const byte IORING_OP_POLL_ADD = 6;
    public const byte IORING_OP_POLL_REMOVE = 7;
    public const byte IORING_OP_SENDMSG = 9;
    public const byte IORING_OP_RECVMSG = 10;
    public const byte IORING_OP_TIMEOUT = 11;
    public const byte IORING_OP_TIMEOUT_REMOVE = 12;
    public const byte IORING_OP_ACCEPT = 13;
    public const byte IORING_OP_ASYNC_CANCEL = 14;
    public const byte IORING_OP_LINK_TIMEOUT = 15;
    public const byte IORING_OP_CONNECT = 16;
    public const byte IORING_OP_OPENAT = 18;
    public const byte IORING_OP_CLOSE = 19;
    public const byte IORING_OP_STATX = 21;
    public const byte IORING_OP_READ = 22;
    public const byte IORING_OP_WRITE = 23;
    public const byte IORING_OP_SEND = 26;
    public const byte IORING_OP_RECV = 27;
    public const byte IORING_OP_SPLICE = 30;
    public const byte IORING_OP_PROVIDE_BUFFERS = 31;
    public const byte IORING_OP_REMOVE_BUFFERS = 32;
    public const byte IORING_OP_SHUTDOWN = 34;
    public const byte IORING_OP_MSG_RING = 40;
    public const byte IORING_OP_SOCKET = 45;
    public const byte IORING_OP_URING_CMD = 46;
    public const byte IORING_OP_SEND_ZC = 47;
    public const byte IORING_OP_SENDMSG_ZC = 48;
    /// <summary>Linux 6.7.</summary>
    public const byte IORING_OP_READ_MULTISHOT = 49;
    /// <summary>Linux 6.8.</summary>
    public const byte IORING_OP_FIXED_FD_INSTALL = 54;
    /// <summary>Linux 6.11.</summary>
    public const byte IORING_OP_BIND = 56;
    /// <summary>Linux 6.11.</summary>
    public const byte IORING_OP_LISTEN = 57;
    /// <summary>Linux 6.16.</summary>
    public const byte IORING_OP_PIPE = 62;

    // --- io_uring_cqe.flags ---
    public const uint IORING_CQE_F_BUFFER = 1u << 0;
    public const uint IORING_CQE_F_MORE = 1u << 1;
    public const uint IORING_CQE_F_SOCK_NONEMPTY = 1u << 2;
    public const uint IORING_CQE_F_NOTIF = 1u << 3;
    /// <summary>Linux 6.12.</summary>
    public const uint IORING_CQE_F_BUF_MORE = 1u << 4;
    public const int IORING_CQE_BUFFER_SHIFT = 16;

    // --- sq_ring flags ---
    public const uint IORING_SQ_NEED_WAKEUP = 1u << 0;
    public const uint IORING_SQ_CQ_OVERFLOW = 1u << 1;
    public const uint IORING_SQ_TASKRUN = 1u << 2;

    // --- mmap offsets ---
    public const long IORING_OFF_SQ_RING = 0;
    public const long IORING_OFF_CQ_RING = 0x8000000;
    public const long IORING_OFF_SQES = 0x10000000;

    // --- send/recv flags, in sqe->ioprio ---
    public const ushort IORING_RECVSEND_POLL_FIRST = 1 << 0;
    public const ushort IORING_RECV_MULTISHOT = 1 << 1;
    public const ushort IORING_RECVSEND_FIXED_BUF = 1 << 2;
    public const ushort IORING_SEND_ZC_REPORT_USAGE = 1 << 3;
    /// <summary>Linux 6.10.</summary>
    public const ushort IORING_RECVSEND_BUNDLE = 1 << 4;

    // --- accept flags, in sqe->ioprio ---
    public const ushort IORING_ACCEPT_MULTISHOT = 1 << 0;
    /// <summary>Linux 6.10.</summary>
    public const ushort IORING_ACCEPT_DONTWAIT = 1 << 1;
    /// <summary>Linux 6.10.</summary>
    public const ushort IORING_ACCEPT_POLL_FIRST = 1 << 2;

    // --- async cancel flags, in sqe->cancel_flags ---
    public const uint IORING_ASYNC_CANCEL_ALL = 1u << 0;
    public const uint IORING_ASYNC_CANCEL_FD = 1u << 1;
    public const uint IORING_ASYNC_CANCEL_ANY = 1u << 2;
    public const uint IORING_ASYNC_CANCEL_FD_FIXED = 1u << 3;

    // --- timeout flags ---
    public const uint IORING_TIMEOUT_ABS = 1u << 0;

    public const uint IORING_FILE_INDEX_ALLOC = ~0u;

    // --- io_uring_register opcodes ---
    public const uint IORING_REGISTER_BUFFERS = 0;
    public const uint IORING_UNREGISTER_BUFFERS = 1;
    public const uint IORING_REGISTER_FILES = 2;
    public const uint IORING_UNREGISTER_FILES = 3;
    public const uint IORING_REGISTER_EVENTFD = 4;
    public const uint IORING_UNREGISTER_EVENTFD = 5;
    public const uint IORING_REGISTER_PROBE = 8;
    public const uint IORING_REGISTER_IOWQ_MAX_WORKERS = 19;
    public const uint IORING_REGISTER_RING_FDS = 20;
    public const uint IORING_UNREGISTER_RING_FDS = 21;
    public const uint IORING_REGISTER_PBUF_RING = 22;
    public const uint IORING_UNREGISTER_PBUF_RING = 23;
    /// <summary>Linux 6.3: pass the registered ring index instead of the fd to io_uring_register.</summary>
    public const uint IORING_REGISTER_USE_REGISTERED_RING = 1u << 31;

    // --- provided buffer ring registration flags (io_uring_buf_reg.flags) ---
    /// <summary>Linux 6.4.</summary>
    public const ushort IOU_PBUF_RING_MMAP = 1;
    /// <summary>Linux 6.12.</summary>
    public const ushort IOU_PBUF_RING_INC = 2;

    // --- io_uring_probe_op.flags ---
    public const ushort IO_URING_OP_SUPPORTED = 1 << 0;

    /// <summary>io_uring_setup(2). Returns the ring fd, or -1 with errno set.</summary>
    public static int io_uring_setup(uint entries, io_uring_params* p)
        => (int)Libc.syscall(__NR_io_uring_setup, (nint)entries, (nint)p, 0, 0, 0, 0);

    /// <summary>io_uring_enter2(2), the form with an argument size (EXT_ARG).</summary>
    public static int io_uring_enter(int fd, uint toSubmit, uint minComplete, uint flags, void* arg, nuint argSize)
        => (int)Libc.syscall(__NR_io_uring_enter, fd, (nint)toSubmit, (nint)minComplete, (nint)flags, (nint)arg, (nint)argSize);

    /// <summary>io_uring_register(2).</summary>
    public static int io_uring_register(int fd, uint opcode, void* arg, uint nrArgs)
        => (int)Libc.syscall(__NR_io_uring_register, fd, (nint)opcode, (nint)arg, (nint)nrArgs, 0, 0);
}
