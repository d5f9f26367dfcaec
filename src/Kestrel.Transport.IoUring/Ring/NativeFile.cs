using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using Microsoft.Win32.SafeHandles;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// What identifies one version of a file's contents: which file (device, inode) and its size, last
/// write and last status change. ctime cannot be set from user space and moves on every write,
/// truncation, rename over, chmod or chown, so two equal identities read at different times mean
/// nothing about the file changed in between, as long as the clock did not step back.
/// </summary>
internal readonly record struct FileIdentity(ulong DeviceMajor, ulong DeviceMinor, ulong Inode, long Size, long ModifiedNs, long ChangedNs);

/// <summary>Synchronous file metadata calls (one statx each). The transport uses these instead of issuing syscalls itself.</summary>
internal static unsafe class NativeFile
{
    private const uint Mask = Libc.STATX_TYPE | Libc.STATX_MODE | Libc.STATX_INO | Libc.STATX_SIZE | Libc.STATX_MTIME | Libc.STATX_CTIME;

    /// <summary>
    /// Stats <paramref name="path"/> (following symlinks). Returns false when it does not exist, cannot
    /// be stat'ed, is not a regular file, or the file system did not report every field we compare.
    /// </summary>
    public static bool TryGetRegularFileIdentity(string path, out FileIdentity identity)
    {
        statx buffer;
        // &buffer is a stack local that outlives the synchronous call.
        if (Libc.statx(Libc.AT_FDCWD, path, Libc.AT_STATX_SYNC_AS_STAT, Mask, &buffer) != 0
            || (buffer.stx_mask & Mask) != Mask
            || (buffer.stx_mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            identity = default;
            return false;
        }

        identity = new FileIdentity(
            buffer.stx_dev_major,
            buffer.stx_dev_minor,
            buffer.stx_ino,
            (long)buffer.stx_size,
            ToNanoseconds(buffer.stx_mtime),
            ToNanoseconds(buffer.stx_ctime));
        return true;
    }

    /// <summary>
    /// Opens <paramref name="path"/> for reading. Unlike <c>File.OpenHandle</c>, which takes an advisory
    /// <c>flock(LOCK_SH)</c> that lives as long as the descriptor, this takes no lock: the file sender
    /// keeps a file open until its last read or splice completed, after the response may already be
    /// over, and a lock held then would make a writer that opens the file exclusively (.NET's
    /// <c>File.Create</c>) fail with "used by another process". Errors are the exceptions .NET throws.
    /// </summary>
    public static SafeFileHandle OpenRead(string path)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                Libc.ENOENT => new FileNotFoundException($"Could not find file '{path}'.", path),
                Libc.ENOTDIR => new DirectoryNotFoundException($"Could not find a part of the path '{path}'."),
                Libc.EACCES or Libc.EPERM or Libc.EISDIR => new UnauthorizedAccessException($"Access to the path '{path}' is denied."),
                _ => new IOException($"Opening '{path}' failed: {ErrnoText.Describe(errno)}", errno),
            };
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>CLOCK_REALTIME now, in nanoseconds since the Unix epoch (the clock file timestamps use).</summary>
    public static long RealtimeNowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    private static long ToNanoseconds(statx_timestamp t) => t.tv_sec * 1_000_000_000 + t.tv_nsec;
}
