using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Interop;

/// <summary>struct iovec.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct iovec
{
    public void* iov_base;
    public nuint iov_len;
}

/// <summary>struct msghdr (LP64 layout).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct msghdr
{
    public void* msg_name;
    public uint msg_namelen;
    public iovec* msg_iov;
    public nuint msg_iovlen;
    public void* msg_control;
    public nuint msg_controllen;
    public int msg_flags;
}

/// <summary>struct linger.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct linger
{
    public int l_onoff;
    public int l_linger;
}

/// <summary>struct sockaddr_storage: large enough for any address family.</summary>
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct sockaddr_storage
{
    public ushort ss_family;
}

/// <summary>struct statx_timestamp.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct statx_timestamp
{
    public long tv_sec;
    public uint tv_nsec;
    public int __reserved;
}

/// <summary>struct statx (the same on every architecture; the kernel pads it to 256 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Size = 256)]
internal struct statx
{
    public uint stx_mask;
    public uint stx_blksize;
    public ulong stx_attributes;
    public uint stx_nlink;
    public uint stx_uid;
    public uint stx_gid;
    public ushort stx_mode;
    public ulong stx_ino;
    public ulong stx_size;
    public ulong stx_blocks;
    public ulong stx_attributes_mask;
    public statx_timestamp stx_atime;
    public statx_timestamp stx_btime;
    public statx_timestamp stx_ctime;
    public statx_timestamp stx_mtime;
    public uint stx_rdev_major;
    public uint stx_rdev_minor;
    public uint stx_dev_major;
    public uint stx_dev_minor;
}

/// <summary>
/// The libc functions and constants the ring layer needs. Every function sets errno, read it with
/// <see cref="Marshal.GetLastPInvokeError"/> right after a failing call.
/// </summary>
internal static unsafe partial class Libc
{
    private const string LibcName = "libc";

    // --- errno values (asm-generic, the same on x86_64 and arm64) ---
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EFAULT = 14;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int ENFILE = 23;
    public const int EMFILE = 24;
    public const int EPIPE = 32;
    public const int ENOSYS = 38;
    public const int EBADR = 53;
    public const int ETIME = 62;
    public const int EPROTO = 71;
    public const int ENOTSOCK = 88;
    public const int EOPNOTSUPP = 95;
    public const int EADDRINUSE = 98;
    public const int ENETDOWN = 100;
    public const int ENETUNREACH = 101;
    public const int ECONNABORTED = 103;
    public const int ECONNRESET = 104;
    public const int ENOBUFS = 105;
    public const int ENOTCONN = 107;
    public const int ESHUTDOWN = 108;
    public const int ETIMEDOUT = 110;
    public const int EHOSTUNREACH = 113;
    public const int EALREADY = 114;
    public const int ECANCELED = 125;

    // --- mmap ---
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;
    public const int MAP_SHARED = 0x01;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_POPULATE = 0x8000;
    public static readonly nint MAP_FAILED = -1;

    // --- eventfd ---
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;

    // --- sockets ---
    public const int AF_UNIX = 1;
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;
    public const int SOCK_NONBLOCK = 0x800;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SO_REUSEADDR = 2;
    public const int SO_ERROR = 4;
    public const int SO_LINGER = 13;
    public const int SO_REUSEPORT = 15;
    public const int IPPROTO_TCP = 6;
    public const int TCP_NODELAY = 1;
    public const int TCP_NOTSENT_LOWAT = 25;
    public const int SHUT_RD = 0;
    public const int SHUT_WR = 1;
    public const int SHUT_RDWR = 2;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;

    // --- <sys/stat.h>, <fcntl.h> ---
    public const int AT_FDCWD = -100;
    public const int AT_STATX_SYNC_AS_STAT = 0x0000;
    public const uint STATX_TYPE = 0x0001;
    public const uint STATX_MODE = 0x0002;
    public const uint STATX_MTIME = 0x0040;
    public const uint STATX_CTIME = 0x0080;
    public const uint STATX_INO = 0x0100;
    public const uint STATX_SIZE = 0x0200;
    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;
    public const int O_RDONLY = 0;
    public const int O_CLOEXEC = 0x80000;
    public const int F_SETPIPE_SZ = 1031;
    public const int F_GETPIPE_SZ = 1032;

    // --- <fcntl.h> (_GNU_SOURCE): splice(2) flags, also IORING_OP_SPLICE's splice_flags ---
    public const uint SPLICE_F_NONBLOCK = 2;

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial long syscall(long number, nint a1, nint a2, nint a3, nint a4, nint a5, nint a6);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int munmap(nint addr, nuint length);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial nint read(int fd, void* buf, nuint count);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial nint write(int fd, void* buf, nuint count);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int shutdown(int fd, int how);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial nint send(int fd, void* buf, nuint len, int flags);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int setsockopt(int fd, int level, int optname, void* optval, uint optlen);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int getsockopt(int fd, int level, int optname, void* optval, uint* optlen);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int getsockname(int fd, void* addr, uint* addrlen);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int getpeername(int fd, void* addr, uint* addrlen);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int dup(int fd);

    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int pipe2(int* pipefd, int flags);

    /// <summary>fcntl(2) with one int argument (F_GETPIPE_SZ ignores it).</summary>
    [LibraryImport(LibcName, SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    /// <summary>open(2) without O_CREAT (so without the variadic mode argument).</summary>
    [LibraryImport(LibcName, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string pathname, int flags);

    [LibraryImport(LibcName, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statx(int dirfd, string pathname, int flags, uint mask, statx* statxbuf);
}
