using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Kestrel.Transport.IoUring.Interop;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// Synchronous socket calls on a raw fd that never block (option changes, shutdown, close, address
/// lookups). The transport uses these instead of issuing syscalls itself.
/// </summary>
internal static unsafe class NativeSocket
{
    public static void SetNoDelay(int fd, bool noDelay)
    {
        int value = noDelay ? 1 : 0;
        // &value is a stack local that outlives the synchronous call.
        Libc.setsockopt(fd, Libc.IPPROTO_TCP, Libc.TCP_NODELAY, &value, sizeof(int));
    }

    /// <summary>TCP_NOTSENT_LOWAT: the most unsent bytes the socket queues before it stops accepting more.</summary>
    public static void SetNotSentLowWatermark(int fd, int bytes)
    {
        // &bytes is a parameter on the stack that outlives the synchronous call.
        Libc.setsockopt(fd, Libc.IPPROTO_TCP, Libc.TCP_NOTSENT_LOWAT, &bytes, sizeof(int));
    }

    /// <summary>SO_LINGER {on, 0}: the next close sends RST instead of FIN.</summary>
    public static void SetLingerZero(int fd)
    {
        linger value = new() { l_onoff = 1, l_linger = 0 };
        // &value is a stack local that outlives the synchronous call.
        Libc.setsockopt(fd, Libc.SOL_SOCKET, Libc.SO_LINGER, &value, (uint)sizeof(linger));
    }

    /// <summary>shutdown(2); returns 0 or a negative errno (ENOTCONN when the peer is already gone).</summary>
    public static int Shutdown(int fd, int how)
        => Libc.shutdown(fd, how) == 0 ? 0 : -Marshal.GetLastPInvokeError();

    public static void Close(int fd) => Libc.close(fd);

    /// <summary>
    /// send(2) with MSG_DONTWAIT | MSG_NOSIGNAL: the bytes the socket took (possibly fewer than given), 0 when it
    /// had no room (EAGAIN, or interrupted), or a negative errno.
    /// </summary>
    public static int SendNonBlocking(int fd, ReadOnlySpan<byte> bytes)
    {
        nint sent;
        // The span's memory stays pinned for the call, and the kernel has copied what it took when the call returns.
        fixed (byte* pointer = bytes)
        {
            sent = Libc.send(fd, pointer, (nuint)bytes.Length, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
        }

        if (sent >= 0)
        {
            return (int)sent;
        }

        int errno = Marshal.GetLastPInvokeError();
        return errno is Libc.EAGAIN or Libc.EINTR ? 0 : -errno;
    }

    public static EndPoint? GetLocalEndPoint(int fd)
    {
        sockaddr_storage storage;
        uint length = (uint)sizeof(sockaddr_storage);
        // &storage and &length are stack locals that outlive the synchronous call.
        return Libc.getsockname(fd, &storage, &length) == 0 ? Parse(new ReadOnlySpan<byte>(&storage, (int)length)) : null;
    }

    public static EndPoint? GetRemoteEndPoint(int fd)
    {
        sockaddr_storage storage;
        uint length = (uint)sizeof(sockaddr_storage);
        // &storage and &length are stack locals that outlive the synchronous call.
        return Libc.getpeername(fd, &storage, &length) == 0 ? Parse(new ReadOnlySpan<byte>(&storage, (int)length)) : null;
    }

    /// <summary>Reads a native sockaddr (AF_INET, AF_INET6, AF_UNIX) the way System.Net.Sockets reports it.</summary>
    public static EndPoint? Parse(ReadOnlySpan<byte> sockaddr)
    {
        if (sockaddr.Length < 2)
        {
            return null;
        }

        ushort family = MemoryMarshal.Read<ushort>(sockaddr);
        switch (family)
        {
            case Libc.AF_INET when sockaddr.Length >= 8:
            {
                int port = BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]);
                return new IPEndPoint(new IPAddress(sockaddr.Slice(4, 4)), port);
            }

            case Libc.AF_INET6 when sockaddr.Length >= 28:
            {
                int port = BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]);
                uint scope = MemoryMarshal.Read<uint>(sockaddr[24..]);
                return new IPEndPoint(new IPAddress(sockaddr.Slice(8, 16), scope), port);
            }

            case Libc.AF_UNIX:
            {
                ReadOnlySpan<byte> path = sockaddr[2..];
                int nul = path.IndexOf((byte)0);
                if (nul >= 0)
                {
                    path = path[..nul];
                }

                try
                {
                    return new UnixDomainSocketEndPoint(Encoding.UTF8.GetString(path));
                }
                catch (ArgumentException)
                {
                    return null;
                }
            }

            default:
                return null;
        }
    }

    /// <summary>The errno for an error seen by System.Net.Sockets.</summary>
    public static bool IsAddressInUse(SocketException e) => e.SocketErrorCode == SocketError.AddressAlreadyInUse;
}
