using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>Parameters of one reactor.</summary>
internal sealed class ReactorOptions
{
    public RingOptions Ring { get; set; } = new();

    /// <summary>Provided receive buffers per reactor (power of two). 0 creates no buffer ring.</summary>
    public int ReceiveBufferCount { get; set; } = 1024;

    /// <summary>Bytes per provided receive buffer.</summary>
    public int ReceiveBufferSize { get; set; } = 4096;

    /// <summary>Completions copied out of the CQ per batch.</summary>
    public int CompletionBatchSize { get; set; } = 512;

    /// <summary>How long a stopping reactor waits between sweeps that cancel whatever is still in flight.</summary>
    public TimeSpan StopCancelInterval { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// How long a stopping reactor waits for the final completions of cancelled operations. Past it the
    /// thread exits without freeing the ring's memory (leaked, never reused): only lost completions can
    /// make it expire.
    /// </summary>
    public TimeSpan StopTimeout { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// One thread that alone owns one io_uring. Each loop turn it runs queued work, reaps every completion
/// (advancing the CQ head once per batch), dispatches them to their owners, and makes one io_uring_enter
/// that submits everything the turn queued and, if there is nothing else to do, waits. Other threads
/// hand it work through <see cref="Schedule"/>: a multi-producer queue plus an eventfd whose read stays
/// armed in the ring, written only when the reactor has announced it is about to sleep.
/// </summary>
internal sealed unsafe partial class Reactor : PipeScheduler, IDisposable
{
    private const byte KindWake = 1;
    private const uint ReactorSlot = 0;

    private readonly ReactorOptions _options;
    private readonly ConcurrentQueue<WorkItem> _remoteWork = new();
    private readonly Queue<WorkItem> _localWork = new();
    private readonly PriorityQueue<WorkItem, long> _timers = new();
    private readonly List<WorkItem> _bufferWaiters = [];
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Thread _thread;

    private IoUringRing? _ring;
    private ProvidedBufferRing? _buffers;
    private int _threadId;

    // Owner table: slot -> owner, with a generation per slot (see UserData).
    private IRingOwner?[] _owners = new IRingOwner?[64];
    private uint[] _generations = new uint[64];
    private readonly Stack<uint> _freeSlots = new();
    private uint _nextSlot = 1; // slot 0 is the reactor's own

    // Wake-up channel
    private int _eventFd = -1;
    private ulong* _wakeBuffer;
    private int _sleeping;      // 1 while the reactor is (about to be) blocked in io_uring_enter
    private int _wakePending;   // 1 from an eventfd write until the reactor has seen its read complete
    private bool _wakeArmed;

    private volatile int _state; // 0 running, 1 stop requested, 2 stopped
    private int _activeProducers; // threads inside Schedule's remote path
    private bool _stopNotified;
    private long _stopStarted;
    private long _nextCancelSweep;

    public Reactor(ReactorOptions options, int id)
    {
        _options = options;
        Id = id;
        _thread = new Thread(Run)
        {
            IsBackground = true,
            Name = $"io_uring reactor {id}",
        };
    }

    public int Id { get; }

    /// <summary>Operations issued whose final completion has not arrived yet.</summary>
    public long InFlight { get; private set; }

    public long Completions { get; private set; }

    /// <summary>Times io_uring_enter reported -EBADR: completions the kernel had to drop.</summary>
    public long LostCompletionEvents { get; private set; }
    public long StaleCompletions { get; private set; }
    public long Submissions { get; private set; }
    public long WakeWrites => Volatile.Read(ref _wakeWrites);
    private long _wakeWrites;

    public long EnterCalls => _ring?.EnterCalls ?? 0;
    public long CqOverflows => _ring?.CqOverflows ?? 0;

    /// <summary>Setup flags the ring was created with (after degradation).</summary>
    public uint RingSetupFlags { get; private set; }

    /// <summary>True when the ring's fd is registered (io_uring_enter goes through the registered index).</summary>
    public bool RingFdRegistered { get; private set; }

    /// <summary>Receives exceptions thrown by work items, which the reactor survives.</summary>
    public Action<Exception>? UnhandledException { get; set; }

    public bool IsOnReactorThread => Environment.CurrentManagedThreadId == _threadId;

    public bool IsStopping => _state != 0;

    /// <summary>
    /// True while the reactor is (about to be) blocked in io_uring_enter and no eventfd write is on its way,
    /// so work handed over now would cost a wake-up. A hint only: the reactor may wake the next instant.
    /// </summary>
    // Volatile: a fresh read each call; a stale answer costs one wake-up or one missed direct send, never correctness.
    public bool IsBlockedAndUnwoken => Volatile.Read(ref _sleeping) == 1 && Volatile.Read(ref _wakePending) == 0;

    /// <summary>True once the loop has exited and the ring is gone (work then runs on the thread pool).</summary>
    public bool IsStopped => _state == 2;

    public IoUringRing Ring => _ring ?? throw new InvalidOperationException("The reactor has not started.");

    public ProvidedBufferRing Buffers => _buffers ?? throw new InvalidOperationException("This reactor has no receive buffer ring.");

    /// <summary>Completes when the reactor thread has exited and released its ring.</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>Starts the thread and waits until its ring exists; throws what ring setup threw.</summary>
    public void Start()
    {
        _thread.Start();
        _started.Task.GetAwaiter().GetResult();
    }

    // ---------------- Cross-thread work ----------------

    /// <summary>Runs <paramref name="action"/> on the reactor thread (PipeScheduler contract).</summary>
    public override void Schedule(Action<object?> action, object? state)
    {
        if (IsOnReactorThread && _state != 2)
        {
            _localWork.Enqueue(new WorkItem(action, state));
            return;
        }

        // Full fence (Interlocked): announce this producer before reading _state, so that a reactor
        // that sets _state = 2 and then sees no producer knows nobody will write its eventfd any more.
        Interlocked.Increment(ref _activeProducers);
        try
        {
            if (_state == 2)
            {
                System.Threading.ThreadPool.UnsafeQueueUserWorkItem(action, state, preferLocal: false);
                return;
            }

            _remoteWork.Enqueue(new WorkItem(action, state));

            // Full fence: the enqueue must be visible before we read _sleeping (pairs with the fence
            // after the reactor sets _sleeping and before it re-checks the queue; Dekker-style).
            Interlocked.MemoryBarrier();
            if (Volatile.Read(ref _sleeping) == 1 && Interlocked.Exchange(ref _wakePending, 1) == 0)
            {
                WriteEventFd();
            }

            if (_state == 2)
            {
                // The loop exited between our check and our enqueue: run what it left on the thread pool.
                DrainRemoteToThreadPool();
            }
        }
        finally
        {
            Interlocked.Decrement(ref _activeProducers);
        }
    }

    /// <summary>
    /// Marks the reactor stopped and waits until no producer is between its state check and its
    /// eventfd write, so the eventfd can be closed without a late write hitting a reused fd number.
    /// </summary>
    private void EnterStoppedState()
    {
        // Full fence (Interlocked): the store of 2 is ordered before the read of _activeProducers.
        Interlocked.Exchange(ref _state, 2);
        var spin = new SpinWait();
        while (Volatile.Read(ref _activeProducers) != 0)
        {
            spin.SpinOnce();
        }
    }

    private void WriteEventFd()
    {
        ulong one = 1;
        Interlocked.Increment(ref _wakeWrites);
        Libc.write(_eventFd, &one, sizeof(ulong));
    }

    /// <summary>Runs <paramref name="action"/> on the reactor thread after <paramref name="delay"/>. Reactor thread only.</summary>
    public void AddTimer(TimeSpan delay, Action<object?> action, object? state)
    {
        Debug.Assert(IsOnReactorThread);
        long due = Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);
        _timers.Enqueue(new WorkItem(action, state), due);
    }

    /// <summary>Runs <paramref name="action"/> once recycled receive buffers have been handed back to the kernel.</summary>
    public void WhenBuffersAvailable(Action<object?> action, object? state)
    {
        Debug.Assert(IsOnReactorThread);
        _bufferWaiters.Add(new WorkItem(action, state));
    }

    // ---------------- Owners and SQEs ----------------

    /// <summary>Gives <paramref name="owner"/> a slot. Reactor thread only.</summary>
    public uint Register(IRingOwner owner)
    {
        Debug.Assert(IsOnReactorThread);
        uint slot;
        if (!_freeSlots.TryPop(out slot))
        {
            slot = _nextSlot++;
            if (slot >= _owners.Length)
            {
                Array.Resize(ref _owners, _owners.Length * 2);
                Array.Resize(ref _generations, _generations.Length * 2);
            }
        }

        _owners[slot] = owner;
        return slot;
    }

    /// <summary>
    /// Frees <paramref name="slot"/> and advances its generation, so completions still addressed to the
    /// old generation are dropped. Reactor thread only.
    /// </summary>
    public void Unregister(uint slot)
    {
        Debug.Assert(IsOnReactorThread);
        Debug.Assert(slot != ReactorSlot && _owners[slot] is not null);
        _owners[slot] = null;
        _generations[slot] = (_generations[slot] + 1) & UserData.GenerationMask;
        _freeSlots.Push(slot);
    }

    /// <summary>The user_data for an operation of <paramref name="kind"/> issued by the owner of <paramref name="slot"/>.</summary>
    public ulong UserDataFor(uint slot, byte kind) => UserData.Encode(kind, _generations[slot], slot);

    /// <summary>
    /// A zeroed SQE addressed to <paramref name="slot"/>'s owner as <paramref name="kind"/>, counted in
    /// flight until its final completion. Submitted at the end of this loop turn. Reactor thread only.
    /// </summary>
    public io_uring_sqe* GetSqe(uint slot, byte kind)
    {
        io_uring_sqe* sqe = GetSqe();
        sqe->user_data = UserData.Encode(kind, _generations[slot], slot);
        return sqe;
    }

    /// <summary>A zeroed SQE whose completion nobody needs (user_data 0), still counted in flight.</summary>
    public io_uring_sqe* GetSqe()
    {
        if (!IsOnReactorThread || _state == 2)
        {
            // Only the owner thread may touch the ring (SINGLE_ISSUER), and never after it is released.
            throw new InvalidOperationException("An io_uring operation was issued off its reactor thread or after the reactor stopped.");
        }

        io_uring_sqe* sqe = Ring.GetSqe();
        InFlight++;
        Submissions++;
        return sqe;
    }

    /// <summary>
    /// Queues close(2) of <paramref name="fd"/> in the ring, batched with this turn's submission (a socket
    /// has no flush method, so the kernel closes it inline, not on io-wq). The caller guarantees no
    /// operation on the fd is in flight and none will be issued: the number is reused once this runs.
    /// </summary>
    public void QueueClose(int fd)
    {
        io_uring_sqe* sqe = GetSqe();
        sqe->opcode = IORING_OP_CLOSE;
        sqe->fd = fd;
    }

    /// <summary>Queues an ASYNC_CANCEL of the one operation carrying <paramref name="userData"/>.</summary>
    public void CancelUserData(ulong userData)
    {
        io_uring_sqe* sqe = GetSqe();
        sqe->opcode = IORING_OP_ASYNC_CANCEL;
        sqe->fd = -1;
        sqe->addr = userData;
    }

    // ---------------- Stop ----------------

    /// <summary>
    /// Asks the reactor to stop: owners are told, everything in flight is cancelled, and the thread exits
    /// once the final completion of every operation has been seen. Only then is ring memory released.
    /// </summary>
    public Task StopAsync()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) == 0)
        {
            if (_thread.IsAlive)
            {
                Schedule(static _ => { }, null); // wake it
            }
            else
            {
                _stopped.TrySetResult();
            }
        }

        return _stopped.Task;
    }

    public void Dispose() => StopAsync().GetAwaiter().GetResult();

    // ---------------- The loop ----------------

    private void Run()
    {
        _threadId = Environment.CurrentManagedThreadId;
        try
        {
            // SINGLE_ISSUER binds the ring to the thread that creates it: create it here.
            _ring = new IoUringRing(_options.Ring);
            RingSetupFlags = _ring.SetupFlags;
            RingFdRegistered = _ring.RingFdRegistered;
            if (_options.ReceiveBufferCount > 0)
            {
                _buffers = new ProvidedBufferRing(_ring, 0, _options.ReceiveBufferCount, _options.ReceiveBufferSize);
            }

            _eventFd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
            if (_eventFd < 0)
            {
                throw IoUringException.FromLastError("eventfd");
            }

            _wakeBuffer = (ulong*)NativeBuffers.Allocate(sizeof(ulong));
        }
        catch (Exception e)
        {
            EnterStoppedState();
            ReleaseResources();
            _started.TrySetException(e);
            _stopped.TrySetResult();
            return;
        }

        _started.TrySetResult();
        try
        {
            Loop();
        }
        catch (Exception e)
        {
            // Only a bug in the loop itself lands here. Memory the kernel may still touch is leaked on
            // purpose rather than freed: we cannot prove it idle.
            UnhandledException?.Invoke(e);
            EnterStoppedState();
            DrainRemoteToThreadPool();
            _stopped.TrySetException(e);
            return;
        }

        EnterStoppedState();
        if (InFlight == 0)
        {
            ReleaseResources();
        }
        else
        {
            // Completions were lost (see EBADR) and some operation may still own memory: leak the ring,
            // the slab and the eventfd rather than free memory the kernel might write.
            UnhandledException?.Invoke(new InvalidOperationException(
                $"io_uring reactor {Id} stopped with {InFlight} operation(s) never completed; their memory is deliberately not freed."));
        }

        DrainRemoteToThreadPool();
        _stopped.TrySetResult();
    }

    private void Loop()
    {
        IoUringRing ring = _ring!;
        var batch = new io_uring_cqe[_options.CompletionBatchSize];
        ArmWake();

        while (true)
        {
            RunWork();
            RunTimers();
            PublishBuffers();

            if (_state != 0)
            {
                if (!StopStep())
                {
                    return;
                }
            }

            bool mayWait = _localWork.Count == 0 && ring.ReadyCompletions == 0;
            if (mayWait)
            {
                // Full fence (Interlocked): announce the sleep before re-checking the queue, so a
                // producer either sees _sleeping == 1 and writes the eventfd, or we see its item.
                Interlocked.Exchange(ref _sleeping, 1);
                if (!_remoteWork.IsEmpty)
                {
                    Volatile.Write(ref _sleeping, 0);
                    mayWait = false;
                }
            }

            long timeout = mayWait ? NextTimeoutNanoseconds() : 0;
            int ret = ring.SubmitAndWait(mayWait ? 1u : 0u, timeout);
            Volatile.Write(ref _sleeping, 0);
            if (ret == -Libc.EBADR)
            {
                // The kernel dropped completions it could not store (only possible without NODROP, or when
                // it cannot allocate overflow entries). Nothing to redo here; count it and go on. The
                // owners of the lost operations are ended by the stop deadline at shutdown.
                LostCompletionEvents++;
                UnhandledException?.Invoke(new IoUringException("io_uring_enter reported lost completions", Libc.EBADR));
            }
            else if (ret < 0 && -ret is not (Libc.EINTR or Libc.EAGAIN or Libc.EBUSY or Libc.ETIME))
            {
                throw new IoUringException("io_uring_enter", -ret);
            }

            int n;
            do
            {
                n = ring.CopyCompletions(batch);
                for (int i = 0; i < n; i++)
                {
                    Dispatch(in batch[i]);
                }
            }
            while (n == batch.Length);
        }
    }

    /// <summary>One turn of stopping. Returns false when the loop may exit.</summary>
    private bool StopStep()
    {
        long now = Stopwatch.GetTimestamp();
        if (!_stopNotified)
        {
            _stopNotified = true;
            _stopStarted = now;
            for (uint slot = 1; slot < _nextSlot; slot++)
            {
                IRingOwner? owner = _owners[slot];
                if (owner is null)
                {
                    continue;
                }

                try
                {
                    owner.OnReactorStopping();
                }
                catch (Exception e)
                {
                    SafeOwnerException(owner, e);
                }
            }

            RunWork();
        }

        if (InFlight == 0 && _localWork.Count == 0 && _remoteWork.IsEmpty)
        {
            return false;
        }

        if (now - _stopStarted > (long)(_options.StopTimeout.TotalSeconds * Stopwatch.Frequency))
        {
            return false; // Run() sees InFlight > 0 and leaks instead of freeing
        }

        if (now >= _nextCancelSweep)
        {
            // Cancel everything still in flight, whoever issued it (the wake read included). Repeated
            // until the last final completion arrives; operations that already finished are unaffected.
            _nextCancelSweep = now + (long)(_options.StopCancelInterval.TotalSeconds * Stopwatch.Frequency);
            io_uring_sqe* sqe = Ring.GetSqe();
            InFlight++;
            sqe->opcode = IORING_OP_ASYNC_CANCEL;
            sqe->fd = -1;
            sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
            AddTimer(_options.StopCancelInterval, static _ => { }, null);
        }

        return true;
    }

    private void Dispatch(in io_uring_cqe cqe)
    {
        Completions++;
        if ((cqe.flags & IORING_CQE_F_MORE) == 0)
        {
            InFlight--;
        }

        if (cqe.user_data == UserData.None)
        {
            return;
        }

        UserData ud = UserData.Decode(cqe.user_data);
        if (ud.Slot == ReactorSlot)
        {
            if (ud.Kind == KindWake)
            {
                OnWakeCompleted(cqe.res);
            }

            return;
        }

        if (ud.Slot >= _nextSlot || _generations[ud.Slot] != ud.Generation || _owners[ud.Slot] is not IRingOwner owner)
        {
            // A completion for a slot that was closed (and maybe reused) since: harmless by construction.
            StaleCompletions++;
            return;
        }

        try
        {
            owner.OnCompletion(ud.Kind, cqe.res, cqe.flags);
        }
        catch (Exception e)
        {
            SafeOwnerException(owner, e);
        }
    }

    private void SafeOwnerException(IRingOwner owner, Exception e)
    {
        try
        {
            owner.OnHandlerException(e);
        }
        catch (Exception inner)
        {
            UnhandledException?.Invoke(new AggregateException(e, inner));
        }
    }

    private void RunWork()
    {
        // Remote items first, then local ones; bounded by what is queued now so that work that keeps
        // scheduling more work cannot starve the ring.
        int remote = 0;
        while (remote++ < 4096 && _remoteWork.TryDequeue(out WorkItem item))
        {
            Invoke(item);
        }

        int local = _localWork.Count;
        while (local-- > 0 && _localWork.TryDequeue(out WorkItem item))
        {
            Invoke(item);
        }
    }

    private void Invoke(in WorkItem item)
    {
        try
        {
            item.Action(item.State);
        }
        catch (Exception e)
        {
            UnhandledException?.Invoke(e);
        }
    }

    private void RunTimers()
    {
        if (_timers.Count == 0)
        {
            return;
        }

        long now = Stopwatch.GetTimestamp();
        while (_timers.TryPeek(out WorkItem item, out long due) && due <= now)
        {
            _timers.Dequeue();
            Invoke(item);
        }
    }

    private long NextTimeoutNanoseconds()
    {
        if (!_timers.TryPeek(out _, out long due))
        {
            return -1;
        }

        long ticks = Math.Max(0, due - Stopwatch.GetTimestamp());
        return Math.Max(1, (long)(ticks * (1_000_000_000.0 / Stopwatch.Frequency)));
    }

    private void PublishBuffers()
    {
        if (_buffers is null)
        {
            return;
        }

        _buffers.Publish();
        if (_bufferWaiters.Count > 0 && _buffers.KernelOwned > 0)
        {
            WorkItem[] waiters = [.. _bufferWaiters];
            _bufferWaiters.Clear();
            foreach (WorkItem waiter in waiters)
            {
                Invoke(waiter);
            }
        }
    }

    private void ArmWake()
    {
        io_uring_sqe* sqe = GetSqe(ReactorSlot, KindWake);
        sqe->opcode = IORING_OP_READ;
        sqe->fd = _eventFd;
        sqe->addr = (ulong)_wakeBuffer;
        sqe->len = sizeof(ulong);
        sqe->off = ulong.MaxValue; // read at the current position (eventfd has none)
        _wakeArmed = true;
    }

    private void OnWakeCompleted(int result)
    {
        _wakeArmed = false;
        // Reset before the queue is drained this turn: a producer that saw 1 had already enqueued.
        Volatile.Write(ref _wakePending, 0);
        if (_state == 0 && result != -Libc.ECANCELED)
        {
            ArmWake();
        }
    }

    private void DrainRemoteToThreadPool()
    {
        while (_remoteWork.TryDequeue(out WorkItem item))
        {
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(item.Action, item.State, preferLocal: false);
        }

        while (_localWork.TryDequeue(out WorkItem item))
        {
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(item.Action, item.State, preferLocal: false);
        }
    }

    private void ReleaseResources()
    {
        Debug.Assert(InFlight == 0 && !_wakeArmed);
        _buffers?.Dispose();
        _buffers = null;
        _ring?.Dispose();
        if (_eventFd >= 0)
        {
            Libc.close(_eventFd);
            _eventFd = -1;
        }

        if (_wakeBuffer != null)
        {
            NativeBuffers.Free(_wakeBuffer, sizeof(ulong));
            _wakeBuffer = null;
        }
    }

    private readonly record struct WorkItem(Action<object?> Action, object? State);
}
