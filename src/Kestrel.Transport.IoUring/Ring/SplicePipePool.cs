using Kestrel.Transport.IoUring.Interop;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// A pipe that file bytes pass through on their way to a socket: IORING_OP_SPLICE moves page
/// references from the page cache into it and from it into the socket, so the bytes are never copied
/// through user space. Whoever rented it owns both fds until it gives it back.
/// </summary>
internal sealed class SplicePipe(int readFd, int writeFd, int capacity)
{
    public int ReadFd { get; } = readFd;

    public int WriteFd { get; } = writeFd;

    /// <summary>Bytes the pipe holds (F_GETPIPE_SZ): one splice into it never moves more.</summary>
    public int Capacity { get; } = capacity;
}

/// <summary>
/// Idle splice pipes, shared by the connections of a transport. Every pipe counts against the user's
/// pipe-user-pages-soft (16 pages each, 16384 pages by default: about 1024 pipes); past it the kernel
/// gives new pipes 2 pages only. So a pipe is held only while a file region is being sent and then
/// reused, and at most <c>maxIdle</c> are kept. A pipe is taken back only when empty: one that may
/// still hold bytes (a send that ended early) is closed instead, never handed to another connection.
/// Any thread.
/// </summary>
internal sealed unsafe class SplicePipePool(int maxIdle) : IDisposable
{
    /// <summary>The pipe size asked for: 256 KiB, a quarter of the default pipe-max-size.</summary>
    public const int PreferredCapacity = 256 * 1024;

    private readonly Stack<SplicePipe> _idle = new();
    private readonly Lock _lock = new();
    private bool _disposed;

    /// <summary>Pipes open in the process (all pools, rented or idle): 0 when nothing leaks.</summary>
    public static long LivePipes => Volatile.Read(ref s_livePipes);
    private static long s_livePipes;

    /// <summary>An empty pipe, reused or new; false when no pipe can be created (fd or pipe limits).</summary>
    public bool TryRent(out SplicePipe? pipe)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                pipe = null;
                return false;
            }

            if (_idle.TryPop(out pipe))
            {
                return true;
            }
        }

        int* fds = stackalloc int[2];
        // fds is a stack array of the two ints pipe2 writes, alive for the synchronous call.
        if (Libc.pipe2(fds, Libc.O_CLOEXEC) != 0)
        {
            pipe = null;
            return false;
        }

        // Larger than the default 64 KiB when allowed (pipe-max-size, pipe-user-pages-soft): fewer splice
        // pairs per file. A refusal is fine: the pipe keeps its size, which F_GETPIPE_SZ reports.
        Libc.fcntl(fds[1], Libc.F_SETPIPE_SZ, PreferredCapacity);
        int capacity = Libc.fcntl(fds[1], Libc.F_GETPIPE_SZ, 0);
        if (capacity <= 0)
        {
            Libc.close(fds[0]);
            Libc.close(fds[1]);
            pipe = null;
            return false;
        }

        Interlocked.Increment(ref s_livePipes);
        pipe = new SplicePipe(fds[0], fds[1], capacity);
        return true;
    }

    /// <summary>
    /// Gives a pipe back. The caller guarantees that no operation on it is in flight. A pipe that is
    /// not known to be empty is closed (its leftover bytes die with it).
    /// </summary>
    public void Return(SplicePipe pipe, bool empty)
    {
        lock (_lock)
        {
            if (empty && !_disposed && _idle.Count < maxIdle)
            {
                _idle.Push(pipe);
                return;
            }
        }

        Close(pipe);
    }

    public void Dispose()
    {
        SplicePipe[] idle;
        lock (_lock)
        {
            _disposed = true;
            idle = _idle.ToArray();
            _idle.Clear();
        }

        foreach (SplicePipe pipe in idle)
        {
            Close(pipe);
        }
    }

    private static void Close(SplicePipe pipe)
    {
        Libc.close(pipe.ReadFd);
        Libc.close(pipe.WriteFd);
        Interlocked.Decrement(ref s_livePipes);
    }
}
