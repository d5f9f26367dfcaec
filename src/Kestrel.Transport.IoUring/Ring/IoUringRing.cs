using System.Diagnostics;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>Parameters of one ring.</summary>
internal sealed class RingOptions
{
    /// <summary>Submission queue entries (rounded up to a power of two by the kernel). Defaults to 1024.</summary>
    public uint SqEntries { get; set; } = 1024;

    /// <summary>Completion queue entries (IORING_SETUP_CQSIZE, clamped). Defaults to 16384: multishot makes CQEs without SQEs.</summary>
    public uint CqEntries { get; set; } = 16384;

    /// <summary>The setup flags to ask for; each one the kernel refuses is dropped in turn.</summary>
    public uint DesiredFlags { get; set; } = DefaultFlags;

    /// <summary>Register the ring fd (IORING_REGISTER_RING_FDS) so io_uring_enter skips the fd table.</summary>
    public bool RegisterRingFd { get; set; } = true;

    /// <summary>Test hook: flags treated as refused by the kernel (EINVAL) to exercise degradation.</summary>
    public uint SimulateRefusedFlags { get; set; }

    public const uint DefaultFlags =
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_NO_SQARRAY;

    /// <summary>
    /// The flags without SINGLE_ISSUER and DEFER_TASKRUN: completion work is run cooperatively
    /// (COOP_TASKRUN, no inter-processor interrupt) at the owner thread's next kernel entry or exit.
    /// </summary>
    public const uint CoopTaskRunFlags =
        (DefaultFlags & ~(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)) | IORING_SETUP_COOP_TASKRUN;

    /// <summary>The order in which optional flags are given up when the kernel refuses a set.</summary>
    internal static readonly uint[] DegradationOrder =
    [
        IORING_SETUP_NO_SQARRAY,
        IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER,
        IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_SUBMIT_ALL,
    ];
}

/// <summary>
/// One io_uring instance: the mapped submission and completion queues and the three system calls.
/// Not thread-safe: with IORING_SETUP_SINGLE_ISSUER only the thread that created it may use it.
/// Completions are copied out (<see cref="CopyCompletions"/>) before anyone reacts to them, so that a
/// reaction that has to submit while the SQ is full may drain the CQ without reentrancy.
/// </summary>
internal sealed unsafe class IoUringRing : IDisposable
{
    private readonly int _ringFd;
    private int _enterFd;
    private uint _enterFlags;

    // Mappings
    private readonly nint _sqRingPtr;
    private readonly nuint _sqRingSize;
    private readonly nint _cqRingPtr;
    private readonly nuint _cqRingSize;
    private readonly nint _sqesPtr;
    private readonly nuint _sqesSize;

    // Submission queue
    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint* _sqFlags;
    private readonly uint _sqMask;
    private readonly io_uring_sqe* _sqes;
    private uint _sqeTail;      // next SQE to hand out (ours alone)
    private uint _sqeSubmitted; // SQEs already made visible to the kernel via *_sqTail

    // Completion queue
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint* _cqOverflow;
    private readonly uint _cqMask;
    private readonly io_uring_cqe* _cqes;

    private readonly int _ownerThreadId;
    private bool _disposed;

    // Completions drained while a full SQ had to be flushed; delivered by the next CopyCompletions.
    private readonly Queue<io_uring_cqe> _backlog = new();

    public uint SetupFlags { get; }
    public uint Features { get; }
    public uint SqEntries { get; }
    public uint CqEntries { get; }
    public bool RingFdRegistered { get; }

    /// <summary>Flags that were asked for but refused by the kernel, so dropped.</summary>
    public uint DroppedFlags { get; }

    public int RingFd => _ringFd;

    /// <summary>io_uring_enter calls made (for tests, metrics and benchmarks).</summary>
    public long EnterCalls { get; private set; }

    /// <summary>Times the kernel reported a CQ overflow (IORING_SQ_CQ_OVERFLOW) that we then flushed.</summary>
    public long CqOverflows { get; private set; }

    public IoUringRing(RingOptions options)
    {
        _ownerThreadId = Environment.CurrentManagedThreadId;
        io_uring_params p;
        uint flags = options.DesiredFlags;
        uint dropped = 0;
        int fd;
        while (true)
        {
            p = default;
            p.flags = flags;
            p.cq_entries = options.CqEntries;
            if ((flags & options.SimulateRefusedFlags) != 0)
            {
                fd = -1;
                Marshal.SetLastPInvokeError(Libc.EINVAL);
            }
            else
            {
                fd = io_uring_setup(options.SqEntries, &p);
            }

            if (fd >= 0)
            {
                break;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno != Libc.EINVAL)
            {
                throw new IoUringException("io_uring_setup", errno);
            }

            // EINVAL: an unknown flag (or a flag combination this kernel cannot do). Give up the
            // next optional flag that is still set, in a fixed order, and try again.
            uint next = 0;
            foreach (uint candidate in RingOptions.DegradationOrder)
            {
                if ((flags & candidate) != 0)
                {
                    next = candidate;
                    break;
                }
            }

            if (next == 0)
            {
                throw new IoUringException("io_uring_setup", errno);
            }

            flags &= ~next;
            dropped |= next;
            if (next == IORING_SETUP_SINGLE_ISSUER)
            {
                // DEFER_TASKRUN requires SINGLE_ISSUER.
                dropped |= flags & IORING_SETUP_DEFER_TASKRUN;
                flags &= ~IORING_SETUP_DEFER_TASKRUN;
            }
        }

        _ringFd = fd;
        _enterFd = fd;
        SetupFlags = flags;
        DroppedFlags = dropped;
        Features = p.features;
        SqEntries = p.sq_entries;
        CqEntries = p.cq_entries;

        try
        {
            _sqRingSize = p.sq_off.array + p.sq_entries * sizeof(uint);
            if ((flags & IORING_SETUP_NO_SQARRAY) != 0)
            {
                // No SQ index array: the ring ends after the fields the kernel placed last.
                _sqRingSize = Math.Max(p.sq_off.array, p.sq_off.flags + sizeof(uint));
                _sqRingSize = Math.Max(_sqRingSize, p.sq_off.dropped + sizeof(uint));
            }

            _cqRingSize = p.cq_off.cqes + p.cq_entries * (uint)sizeof(io_uring_cqe);
            bool singleMmap = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
            if (singleMmap)
            {
                _sqRingSize = _cqRingSize = Math.Max(_sqRingSize, _cqRingSize);
            }

            _sqRingPtr = Map(fd, _sqRingSize, IORING_OFF_SQ_RING);
            _cqRingPtr = singleMmap ? _sqRingPtr : Map(fd, _cqRingSize, IORING_OFF_CQ_RING);
            _sqesSize = p.sq_entries * (uint)sizeof(io_uring_sqe);
            _sqesPtr = Map(fd, _sqesSize, IORING_OFF_SQES);
        }
        catch
        {
            UnmapAll();
            Libc.close(fd);
            throw;
        }

        byte* sq = (byte*)_sqRingPtr;
        _sqHead = (uint*)(sq + p.sq_off.head);
        _sqTail = (uint*)(sq + p.sq_off.tail);
        _sqFlags = (uint*)(sq + p.sq_off.flags);
        _sqMask = *(uint*)(sq + p.sq_off.ring_mask);
        _sqes = (io_uring_sqe*)_sqesPtr;
        if ((flags & IORING_SETUP_NO_SQARRAY) == 0)
        {
            // The SQ index array maps ring slot i to SQE i, forever; we fill SQEs in ring order.
            uint* array = (uint*)(sq + p.sq_off.array);
            for (uint i = 0; i < p.sq_entries; i++)
            {
                array[i] = i;
            }
        }

        byte* cq = (byte*)_cqRingPtr;
        _cqHead = (uint*)(cq + p.cq_off.head);
        _cqTail = (uint*)(cq + p.cq_off.tail);
        _cqOverflow = (uint*)(cq + p.cq_off.overflow);
        _cqMask = *(uint*)(cq + p.cq_off.ring_mask);
        _cqes = (io_uring_cqe*)(cq + p.cq_off.cqes);

        _sqeTail = _sqeSubmitted = *_sqTail;

        if (options.RegisterRingFd)
        {
            io_uring_rsrc_update update = new() { offset = uint.MaxValue, data = (ulong)fd };
            int ret = io_uring_register(fd, IORING_REGISTER_RING_FDS, &update, 1);
            if (ret == 1)
            {
                _enterFd = (int)update.offset;
                _enterFlags = IORING_ENTER_REGISTERED_RING;
                RingFdRegistered = true;
            }
        }
    }

    private static nint Map(int fd, nuint size, long offset)
    {
        nint ptr = Libc.mmap(0, size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_POPULATE, fd, offset);
        if (ptr == Libc.MAP_FAILED)
        {
            throw IoUringException.FromLastError("mmap of the io_uring queues");
        }

        return ptr;
    }

    /// <summary>SQEs prepared but not yet handed to the kernel.</summary>
    public uint PendingSubmissions => _sqeTail - _sqeSubmitted;

    /// <summary>True when the kernel holds completions it could not post because the CQ was full.</summary>
    // Acquire: a plain read could be hoisted out of a polling loop.
    public bool CqOverflowPending => (Volatile.Read(ref *_sqFlags) & IORING_SQ_CQ_OVERFLOW) != 0;

    /// <summary>Completions the kernel dropped for good (only without IORING_FEAT_NODROP).</summary>
    public uint CqDropped => Volatile.Read(ref *_cqOverflow);

    /// <summary>
    /// Returns a zeroed SQE to fill. When the SQ is full, what is queued is submitted first (and, if
    /// the kernel is busy with a full CQ, completions are drained into a backlog), so this always succeeds.
    /// </summary>
    public io_uring_sqe* GetSqe()
    {
        AssertOwner();
        while (true)
        {
            // Acquire: the kernel's store to the SQ head (it has consumed those SQEs) must be seen
            // before we overwrite the entries it released.
            uint head = Volatile.Read(ref *_sqHead);
            if (_sqeTail - head < SqEntries)
            {
                io_uring_sqe* sqe = &_sqes[_sqeTail & _sqMask];
                _sqeTail++;
                *sqe = default;
                return sqe;
            }

            FlushFullQueue();
        }
    }

    private void FlushFullQueue()
    {
        int ret = Enter(0, 0, null, 0);
        if (ret >= 0)
        {
            return;
        }

        int errno = -ret;
        if (errno is Libc.EBUSY or Libc.EAGAIN or Libc.EINTR)
        {
            // The kernel cannot take more until completions are consumed: move them aside.
            DrainToBacklog();
            return;
        }

        throw new IoUringException("io_uring_enter (submit)", errno);
    }

    /// <summary>Publishes prepared SQEs to the kernel's view of the SQ tail.</summary>
    private void PublishTail()
    {
        if (_sqeSubmitted != _sqeTail)
        {
            // Release: the SQE contents must be visible to the kernel before the tail that covers them.
            Volatile.Write(ref *_sqTail, _sqeTail);
            _sqeSubmitted = _sqeTail;
        }
    }

    /// <summary>
    /// Submits everything prepared and, if <paramref name="minComplete"/> is positive, waits for that
    /// many completions or the timeout. Returns the number of SQEs the kernel consumed, or a negative
    /// errno. EINTR, EAGAIN, EBUSY and ETIME are normal outcomes the caller treats as "look again".
    /// </summary>
    public int SubmitAndWait(uint minComplete, long timeoutNanoseconds)
    {
        AssertOwner();
        if (timeoutNanoseconds < 0 || minComplete == 0)
        {
            return Enter(minComplete, IORING_ENTER_GETEVENTS, null, 0);
        }

        __kernel_timespec ts = new()
        {
            tv_sec = timeoutNanoseconds / 1_000_000_000,
            tv_nsec = timeoutNanoseconds % 1_000_000_000,
        };
        io_uring_getevents_arg arg = new() { ts = (ulong)(nint)(&ts) };
        return Enter(minComplete, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, (nuint)sizeof(io_uring_getevents_arg));
    }

    /// <summary>Submits everything prepared without waiting.</summary>
    public int Submit() => Enter(0, 0, null, 0);

    private int Enter(uint minComplete, uint flags, void* arg, nuint argSize)
    {
        PublishTail();
        uint toSubmit = _sqeTail - Volatile.Read(ref *_sqHead);
        EnterCalls++;
        int ret = io_uring_enter(_enterFd, toSubmit, minComplete, flags | _enterFlags, arg, argSize);
        if (ret < 0)
        {
            return -Marshal.GetLastPInvokeError();
        }

        return ret;
    }

    /// <summary>
    /// Copies up to <paramref name="destination"/>.Length completions out of the CQ (backlog first),
    /// then advances the CQ head once. Flushes a kernel-side overflow list when the kernel reports one.
    /// </summary>
    public int CopyCompletions(Span<io_uring_cqe> destination)
    {
        AssertOwner();
        int count = 0;
        while (count < destination.Length && _backlog.TryDequeue(out io_uring_cqe backlogged))
        {
            destination[count++] = backlogged;
        }

        count += CopyFromRing(destination[count..]);
        if (count < destination.Length && CqOverflowPending)
        {
            // The kernel kept completions that did not fit (IORING_FEAT_NODROP). With DEFER_TASKRUN only
            // an enter with GETEVENTS moves them into the ring; it must not wait here.
            CqOverflows++;
            Enter(0, IORING_ENTER_GETEVENTS, null, 0);
            count += CopyFromRing(destination[count..]);
        }

        return count;
    }

    private int CopyFromRing(Span<io_uring_cqe> destination)
    {
        uint head = *_cqHead; // only we write the head, a plain read is current
        // Acquire: CQE contents written by the kernel are visible once we have seen the tail covering them.
        uint tail = Volatile.Read(ref *_cqTail);
        int n = (int)Math.Min(tail - head, (uint)destination.Length);
        for (int i = 0; i < n; i++)
        {
            destination[i] = _cqes[(head + (uint)i) & _cqMask];
        }

        if (n > 0)
        {
            // Release: our reads of the CQEs must complete before the kernel may reuse their slots.
            Volatile.Write(ref *_cqHead, head + (uint)n);
        }

        return n;
    }

    /// <summary>Moves every completion now in the CQ into the backlog, so the kernel can post more.</summary>
    private void DrainToBacklog()
    {
        Span<io_uring_cqe> chunk = stackalloc io_uring_cqe[64];
        int n;
        while ((n = CopyFromRing(chunk)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                _backlog.Enqueue(chunk[i]);
            }
        }
    }

    /// <summary>Number of completions waiting (ring plus backlog); owner thread only.</summary>
    public int ReadyCompletions => _backlog.Count + (int)(Volatile.Read(ref *_cqTail) - *_cqHead);

    /// <summary>io_uring_register on this ring.</summary>
    public int Register(uint opcode, void* arg, uint nrArgs)
    {
        int ret = io_uring_register(_ringFd, opcode, arg, nrArgs);
        return ret < 0 ? -Marshal.GetLastPInvokeError() : ret;
    }

    [Conditional("DEBUG")]
    private void AssertOwner()
        => Debug.Assert(Environment.CurrentManagedThreadId == _ownerThreadId, "io_uring used off its owner thread");

    private void UnmapAll()
    {
        if (_sqesPtr != 0)
        {
            Libc.munmap(_sqesPtr, _sqesSize);
        }

        if (_cqRingPtr != 0 && _cqRingPtr != _sqRingPtr)
        {
            Libc.munmap(_cqRingPtr, _cqRingSize);
        }

        if (_sqRingPtr != 0)
        {
            Libc.munmap(_sqRingPtr, _sqRingSize);
        }
    }

    /// <summary>
    /// Unmaps the queues and closes the ring. The caller guarantees that no operation it issued is
    /// still in flight; the kernel cancels anything left, but memory those operations point at would
    /// otherwise be the caller's to keep alive.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (RingFdRegistered && Environment.CurrentManagedThreadId == _ownerThreadId)
        {
            // The registration holds a reference to the ring in this thread's table (16 slots): without
            // this the ring outlives close() until the thread exits. Another thread's table has another
            // ring at that index, so only the owner thread unregisters.
            io_uring_rsrc_update update = new() { offset = (uint)_enterFd };
            io_uring_register(_ringFd, IORING_UNREGISTER_RING_FDS, &update, 1);
        }

        UnmapAll();
        Libc.close(_ringFd);
    }
}
