using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Kestrel.Transport.IoUring.Interop;
using Microsoft.Win32.SafeHandles;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// Reads one open file through a reactor's ring (IORING_OP_READ at explicit offsets) into buffers it
/// owns: unmovable native memory that nobody else ever sees, so a read still in flight when its
/// caller gives up can only write into memory that is still ours. Up to <see cref="BufferCount"/>
/// reads run at once (double buffering). It owns the file handle and its buffers until
/// <see cref="Release"/> was called and the final completion of every read it issued has arrived;
/// only then does it leave the owner table, free the buffers and close the file.
/// </summary>
/// <remarks>
/// Threads: the caller (one at a time) calls <see cref="Issue"/>, <see cref="WaitAsync"/>,
/// <see cref="Buffer"/> and <see cref="Release"/>; SQEs are prepared and completions handled on the
/// reactor thread. A read's result wakes its waiter on the thread pool, or inline on the reactor when
/// created with inline continuations (the application scheduler is Inline).
/// </remarks>
internal sealed unsafe class RingFileReader : IRingOwner
{
    public const int BufferCount = 2;

    private readonly Reactor _reactor;
    private readonly SafeFileHandle _file;
    private readonly int _fd;
    private readonly byte* _memory;
    private readonly ReadSlot[] _slots = new ReadSlot[BufferCount];

    // Reactor thread only (or, after the reactor stopped, whoever runs its leftover work).
    private uint _ownerSlot;
    private bool _registered;
    private int _inFlight;
    private bool _released;
    private bool _stopping;
    private bool _freed;

    private RingFileReader(Reactor reactor, SafeFileHandle file, int bufferSize, bool inlineContinuations)
    {
        _reactor = reactor;
        _file = file;
        _fd = (int)file.DangerousGetHandle();
        BufferSize = bufferSize;
        _memory = (byte*)NativeBuffers.Allocate((nuint)bufferSize * BufferCount);
        for (int i = 0; i < BufferCount; i++)
        {
            _slots[i] = new ReadSlot(this, i, inlineContinuations);
        }
    }

    public int BufferSize { get; }

    /// <summary>Reads issued through any ring since the process started (all readers).</summary>
    public static long TotalReads => Volatile.Read(ref s_totalReads);
    private static long s_totalReads;

    /// <summary>Readers whose buffers are allocated and not freed yet (all readers): 0 when nothing leaks.</summary>
    public static long LiveReaders => Volatile.Read(ref s_liveReaders);
    private static long s_liveReaders;

    /// <summary>Creates a reader; <see cref="Release"/> must be called exactly once, even if no read was issued.</summary>
    public static RingFileReader Create(Reactor reactor, SafeFileHandle file, int bufferSize, bool inlineContinuations)
    {
        Interlocked.Increment(ref s_liveReaders);
        return new RingFileReader(reactor, file, bufferSize, inlineContinuations);
    }

    /// <summary>The bytes a completed read of buffer <paramref name="index"/> delivered. Valid until that buffer is issued again or released.</summary>
    public ReadOnlySpan<byte> Buffer(int index, int length)
    {
        // _memory is native, owned by this reader until Free, and no read into this buffer is in flight.
        return new ReadOnlySpan<byte>(_memory + (nint)index * BufferSize, length);
    }

    /// <summary>Starts reading <paramref name="length"/> bytes at <paramref name="fileOffset"/> into buffer <paramref name="index"/>.</summary>
    public void Issue(int index, long fileOffset, int length)
    {
        ReadSlot slot = _slots[index];
        slot.Prepare(fileOffset, length);
        // The queue's publication orders Prepare's writes before the reactor reads them.
        _reactor.Schedule(static state => ((ReadSlot)state!).Owner.IssueOnReactor((ReadSlot)state), slot);
    }

    /// <summary>The result of the read last issued into buffer <paramref name="index"/>: bytes read (0 at end of file) or a negative errno.</summary>
    public ValueTask<int> WaitAsync(int index)
    {
        ReadSlot slot = _slots[index];
        return new ValueTask<int>(slot, slot.Version);
    }

    /// <summary>The caller is done: no further reads; the resources go once every read issued has completed.</summary>
    public void Release() => _reactor.Schedule(static state => ((RingFileReader)state!).ReleaseOnReactor(), this);

    private void IssueOnReactor(ReadSlot slot)
    {
        if (_released || _stopping || !_reactor.IsOnReactorThread || _reactor.IsStopping)
        {
            // The reactor is stopping or gone (this runs on the thread pool then): nothing can be issued.
            slot.Complete(-Libc.ECANCELED);
            return;
        }

        if (!_registered)
        {
            _ownerSlot = _reactor.Register(this);
            _registered = true;
        }

        io_uring_sqe* sqe = _reactor.GetSqe(_ownerSlot, (byte)(slot.Index + 1));
        sqe->opcode = IoUringNative.IORING_OP_READ;
        sqe->fd = _fd;
        // The buffer is native memory owned by this reader until Free, which waits for this completion.
        sqe->addr = (ulong)(_memory + (nint)slot.Index * BufferSize);
        sqe->len = (uint)slot.Length;
        sqe->off = (ulong)slot.FileOffset;
        _inFlight++;
        Interlocked.Increment(ref s_totalReads);
    }

    public void OnCompletion(byte kind, int result, uint flags)
    {
        ReadSlot slot = _slots[kind - 1];
        _inFlight--;
        if (result is -Libc.EAGAIN or -Libc.EINTR && !_released)
        {
            // Transient: the same read again (the kernel read nothing).
            IssueOnReactor(slot);
            return;
        }

        if (_released && _inFlight == 0)
        {
            Free();
        }

        // Last: with inline continuations the waiter runs inside this call.
        slot.Complete(result);
    }

    public void OnHandlerException(Exception exception)
    {
        // OnCompletion does not throw; if it ever did, the waiter would hang, so fail both slots.
        foreach (ReadSlot slot in _slots)
        {
            slot.TryFail(exception);
        }
    }

    public void OnReactorStopping() => _stopping = true;

    private void ReleaseOnReactor()
    {
        _released = true;
        if (_inFlight == 0)
        {
            Free();
        }

        // Otherwise the last completion frees. If the reactor stopped with reads never completed (its
        // stop deadline passed), this runs on the thread pool with _inFlight > 0 and the buffers and
        // fd are deliberately leaked: the kernel may still write into them.
    }

    private void Free()
    {
        if (_freed)
        {
            return;
        }

        _freed = true;
        if (_registered && _reactor.IsOnReactorThread && !_reactor.IsStopped)
        {
            _reactor.Unregister(_ownerSlot);
        }

        // No read is in flight: the kernel holds no pointer into this memory and no use of the fd.
        NativeBuffers.Free(_memory, (nuint)BufferSize * BufferCount);
        _file.Dispose();
        Interlocked.Decrement(ref s_liveReaders);
    }

    /// <summary>One buffer's pending read and the awaitable that reports it.</summary>
    private sealed class ReadSlot(RingFileReader owner, int index, bool inlineContinuations) : IValueTaskSource<int>
    {
        private ManualResetValueTaskSourceCore<int> _core = new() { RunContinuationsAsynchronously = !inlineContinuations };

        public RingFileReader Owner { get; } = owner;

        public int Index { get; } = index;

        public long FileOffset { get; private set; }

        public int Length { get; private set; }

        public short Version => _core.Version;

        private int _completed;

        public void Prepare(long fileOffset, int length)
        {
            _core.Reset();
            _completed = 0;
            FileOffset = fileOffset;
            Length = length;
        }

        public void Complete(int result)
        {
            if (Interlocked.Exchange(ref _completed, 1) == 0)
            {
                _core.SetResult(result);
            }
        }

        public void TryFail(Exception exception)
        {
            if (Interlocked.Exchange(ref _completed, 1) == 0)
            {
                _core.SetException(exception);
            }
        }

        public int GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
            => _core.OnCompleted(continuation, state, token, flags);
    }
}
