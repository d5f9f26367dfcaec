using Kestrel.Transport.IoUring.Interop;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// A few descriptors held back so that accepting can never take a process's last ones.
/// </summary>
/// <remarks>
/// When accept fails with EMFILE the process is at its descriptor limit, and everything else in it that
/// needs a descriptor fails too: the runtime starting a thread pool thread (it reads /proc and creates a
/// pipe) or loading an assembly, a file watcher, a log file. Seen here: the .NET runtime ended the
/// process with "Out of memory." while accept was backing off. So the listener holds a few descriptors
/// from the start, <see cref="Release"/>s them the moment accept reports EMFILE (the rest of the process
/// gets that headroom at once), and accepting resumes only when <see cref="TryRefill"/> has taken them
/// all back, that is when at least that many descriptors are free again. Thread-safe: acceptors run on
/// different reactors.
/// </remarks>
internal sealed class DescriptorReserve : IDisposable
{
    /// <summary>Enough for the runtime's own transient needs (a new thread takes three for a moment).</summary>
    public const int DefaultSize = 16;

    private readonly int[] _fds;
    private readonly Lock _lock = new();
    private int _held;
    private bool _disposed;

    public DescriptorReserve(int size = DefaultSize)
    {
        _fds = new int[size];
        TryRefill();
    }

    /// <summary>Closes every reserved descriptor: the rest of the process may use them.</summary>
    public void Release()
    {
        lock (_lock)
        {
            while (_held > 0)
            {
                Libc.close(_fds[--_held]);
            }
        }
    }

    /// <summary>
    /// Takes the whole reserve back, or nothing: true when it is whole (so accepting may take what is
    /// left). A partial reserve would leave the process at its limit, the state the reserve exists to avoid.
    /// </summary>
    public bool TryRefill()
    {
        lock (_lock)
        {
            int before = _held;
            while (!_disposed && _held < _fds.Length)
            {
                // An eventfd is the cheapest descriptor there is: no file system, no network state.
                int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
                if (fd < 0)
                {
                    while (_held > before)
                    {
                        Libc.close(_fds[--_held]);
                    }

                    return false;
                }

                _fds[_held++] = fd;
            }

            return !_disposed;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }

        Release();
    }
}
