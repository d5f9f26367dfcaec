using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>A failed io_uring or libc call, carrying the errno it failed with.</summary>
internal sealed class IoUringException : Exception
{
    public IoUringException(string operation, int errno)
        : base($"{operation} failed: {ErrnoText.Describe(errno)}")
    {
        Operation = operation;
        Errno = errno;
        HResult = errno;
    }

    public string Operation { get; }

    public int Errno { get; }

    /// <summary>Throws for the errno of the last failed P/Invoke.</summary>
    public static IoUringException FromLastError(string operation)
        => new(operation, Marshal.GetLastPInvokeError());
}

/// <summary>Names and descriptions of errno values (strerror without a native call).</summary>
internal static class ErrnoText
{
    public static string Describe(int errno) => $"{Name(errno)} ({errno}): {Marshal.GetPInvokeErrorMessage(errno)}";

    public static string Name(int errno) => errno switch
    {
        Interop.Libc.EPERM => "EPERM",
        Interop.Libc.ENOENT => "ENOENT",
        Interop.Libc.EINTR => "EINTR",
        Interop.Libc.EBADF => "EBADF",
        Interop.Libc.EAGAIN => "EAGAIN",
        Interop.Libc.ENOMEM => "ENOMEM",
        Interop.Libc.EFAULT => "EFAULT",
        Interop.Libc.EBUSY => "EBUSY",
        Interop.Libc.EEXIST => "EEXIST",
        Interop.Libc.EINVAL => "EINVAL",
        Interop.Libc.ENFILE => "ENFILE",
        Interop.Libc.EMFILE => "EMFILE",
        Interop.Libc.EPIPE => "EPIPE",
        Interop.Libc.ENOSYS => "ENOSYS",
        Interop.Libc.EBADR => "EBADR",
        Interop.Libc.ETIME => "ETIME",
        Interop.Libc.ENOTSOCK => "ENOTSOCK",
        Interop.Libc.EOPNOTSUPP => "EOPNOTSUPP",
        Interop.Libc.EADDRINUSE => "EADDRINUSE",
        Interop.Libc.ECONNABORTED => "ECONNABORTED",
        Interop.Libc.ECONNRESET => "ECONNRESET",
        Interop.Libc.ENOBUFS => "ENOBUFS",
        Interop.Libc.ENOTCONN => "ENOTCONN",
        Interop.Libc.ESHUTDOWN => "ESHUTDOWN",
        Interop.Libc.ETIMEDOUT => "ETIMEDOUT",
        Interop.Libc.EALREADY => "EALREADY",
        Interop.Libc.ECANCELED => "ECANCELED",
        _ => "E?",
    };
}
