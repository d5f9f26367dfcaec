using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;
using static Kestrel.Transport.IoUring.Tests.Infrastructure.RingTestHelpers;

namespace Kestrel.Transport.IoUring.Tests.Ring;

/// <summary>The reactor thread against the real kernel: owners, generations, wake-ups, stop.</summary>
public class ReactorTests(ITestOutputHelper output)
{
    private const byte KindTimeout = 10;
    private const byte KindNop = 11;
    private const byte KindRecv = 12;

    [SkippableFact]
    public async Task Dispatch_CompletionForUnregisteredOwnerAfterSlotReuse_IsDroppedAsStale()
    {
        IoUringRequirement.Ensure();
        Reactor reactor = StartReactor();
        nint ts = AllocTimespec(TimeSpan.FromMilliseconds(100));
        try
        {
            var a = new RecordingOwner();
            var b = new RecordingOwner();
            (uint slotA, uint slotB, ulong userDataA, ulong userDataB, long inFlightBefore) = await OnReactor(reactor, () =>
            {
                uint slot = reactor.Register(a);
                long before = reactor.InFlight;
                PrepareTimeout(reactor, slot, ts);
                ulong udA = reactor.UserDataFor(slot, KindTimeout);

                // A leaves while its timeout is still pending; B takes the freed slot.
                reactor.Unregister(slot);
                uint reused = reactor.Register(b);
                return (slot, reused, udA, reactor.UserDataFor(reused, KindTimeout), before);
            });

            Assert.Equal(slotA, slotB);
            Assert.NotEqual(userDataA, userDataB); // same slot, new generation

            await WaitOnReactor(reactor, () => reactor.StaleCompletions == 1, "the orphaned timeout to complete");
            await WaitOnReactor(reactor, () => reactor.InFlight == inFlightBefore, "the timeout to leave the in-flight count");
            Assert.Empty(await OnReactor(reactor, () => b.Completions.ToList()));
            Assert.Empty(await OnReactor(reactor, () => a.Completions.ToList()));

            // B still gets what is addressed to it.
            await OnReactor(reactor, () => PrepareNop(reactor, slotB));
            await WaitOnReactor(reactor, () => b.Completions.Count == 1, "B's own NOP");
            Assert.Equal((KindNop, 0, 0u), await OnReactor(reactor, () => b.Completions[0]));
            Assert.Equal(1, await OnReactor(reactor, () => reactor.StaleCompletions));
        }
        finally
        {
            await StopBounded(reactor);
            Marshal.FreeHGlobal(ts);
        }
    }

    [SkippableFact]
    public async Task Schedule_StormFromEightThreads_RunsEveryItemOnceOnReactorWithCoalescedWakes()
    {
        IoUringRequirement.Ensure();
        const int Producers = 8;
        const int PerProducer = 50_000;
        const int Total = Producers * PerProducer;
        Reactor reactor = StartReactor();
        try
        {
            int[] runs = new int[Total];
            int offThread = 0;
            int done = 0;
            var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Action<object?> item = state =>
            {
                if (!reactor.IsOnReactorThread)
                {
                    Interlocked.Increment(ref offThread); // atomic: an off-thread run may race another
                }

                runs[(int)state!]++; // reactor thread only: a plain increment would expose concurrent runs
                if (++done == Total)
                {
                    all.SetResult();
                }
            };

            long wakesBefore = reactor.WakeWrites;
            using var start = new Barrier(Producers);
            var threads = new Thread[Producers];
            for (int p = 0; p < Producers; p++)
            {
                int producer = p;
                threads[p] = new Thread(() =>
                {
                    var random = new Random(producer);
                    start.SignalAndWait();
                    for (int i = 0; i < PerProducer; i++)
                    {
                        reactor.Schedule(item, (producer * PerProducer) + i);
                        int dice = random.Next(4096);
                        if (dice < 64)
                        {
                            Thread.SpinWait(random.Next(1, 200));
                        }
                        else if (dice < 68)
                        {
                            Thread.Yield();
                        }
                        else if (dice == 68)
                        {
                            Thread.Sleep(1); // long enough for the reactor to go to sleep
                        }
                    }
                })
                { IsBackground = true, Name = $"producer {p}" };
                threads[p].Start();
            }

            foreach (Thread t in threads)
            {
                Assert.True(t.Join(TimeSpan.FromSeconds(30)), "a producer did not finish posting");
            }

            // A lost wake-up leaves the reactor asleep with work queued: this wait would time out.
            await all.Task.WaitAsync(TimeSpan.FromSeconds(30));
            long wakes = reactor.WakeWrites - wakesBefore;

            Assert.Equal(0, Volatile.Read(ref offThread)); // acquire: all items have run (awaited above)
            int[] snapshot = await OnReactor(reactor, () => runs.ToArray());
            for (int i = 0; i < Total; i++)
            {
                Assert.True(snapshot[i] == 1, $"item {i} ran {snapshot[i]} times");
            }

            output.WriteLine($"{Total} posts, {wakes} eventfd writes, {reactor.EnterCalls} enters");
            Assert.True(wakes < Total / 20, $"{wakes} eventfd writes for {Total} posts: wakes are not coalesced");
        }
        finally
        {
            await StopBounded(reactor);
        }
    }

    [SkippableFact]
    public void Schedule_PostWhileReactorFinishesItsTurn_NeverLosesWakeup()
    {
        IoUringRequirement.Ensure();
        const int RoundTrips = 2_000;
        Reactor reactor = StartReactor(SmallReactorOptions(receiveBuffers: 4));
        try
        {
            // Buffer waiters run late in a turn, after the queued work and just before the reactor announces
            // that it will sleep. This one releases the producer and then lingers, so the producer's next post
            // lands exactly in that window. If the announcement and the producer's check can miss each other,
            // the reactor sleeps with the item queued and nothing (no timer, no I/O) ever wakes it.
            var flag = new StrongBox<int>();
            Action<object?> lateInTurn = static s =>
            {
                var box = (StrongBox<int>)s!;
                Volatile.Write(ref box.Value, box.Value + 1); // release: the spinning producer reads it; only this thread writes
                long until = Stopwatch.GetTimestamp() + (Stopwatch.Frequency / 20_000); // 50 us
                while (Stopwatch.GetTimestamp() < until)
                {
                    Thread.SpinWait(10);
                }
            };
            Action<object?> item = s => reactor.WhenBuffersAvailable(lateInTurn, s);
            string? failure = null;
            var producer = new Thread(() =>
            {
                for (int i = 1; i <= RoundTrips; i++)
                {
                    reactor.Schedule(item, flag);
                    long deadline = Stopwatch.GetTimestamp() + (2 * Stopwatch.Frequency);
                    while (Volatile.Read(ref flag.Value) != i) // acquire: pairs with the reactor's release write
                    {
                        if (Stopwatch.GetTimestamp() > deadline)
                        {
                            failure = $"round trip {i} did not run within 2 s: lost wake-up";
                            return;
                        }

                        Thread.SpinWait(20);
                    }
                }
            })
            { IsBackground = true, Name = "late poster" };
            producer.Start();
            Assert.True(producer.Join(TimeSpan.FromSeconds(30)), "the producer did not finish");
            Assert.Null(failure);
        }
        finally
        {
            StopBounded(reactor).GetAwaiter().GetResult();
        }
    }

    [SkippableFact]
    public async Task StopAsync_LongPendingOperations_CancelsAllAndSeesEveryFinalCompletion()
    {
        IoUringRequirement.Ensure();
        Reactor reactor = StartReactor(SmallReactorOptions(receiveBuffers: 16));
        nint ts = AllocTimespec(TimeSpan.FromHours(1));
        nint recvBuffer = Marshal.AllocHGlobal(64);
        (Socket server1, Socket client1) = LoopbackPair();
        (Socket server2, Socket client2) = LoopbackPair();
        try
        {
            var recvOwner = new RecordingOwner();
            var multishotOwner = new RecordingOwner();
            var timerOwner = new RecordingOwner();
            var idleOwner = new RecordingOwner();
            int fd1 = Fd(server1);
            int fd2 = Fd(server2);
            long baseline = await OnReactor(reactor, () => reactor.InFlight);
            await OnReactor(reactor, () =>
            {
                PrepareRecv(reactor, reactor.Register(recvOwner), fd1, recvBuffer, 64);
                PrepareMultishotRecv(reactor, reactor.Register(multishotOwner), fd2, reactor.Buffers.GroupId);
                PrepareTimeout(reactor, reactor.Register(timerOwner), ts);
                reactor.Register(idleOwner);
            });

            // One more turn: the SQEs above have been submitted and are parked in the kernel.
            Assert.Equal(baseline + 3, await OnReactor(reactor, () => reactor.InFlight));
            await Task.Delay(20);
            Assert.Empty(await OnReactor(reactor, () => recvOwner.Completions.Concat(multishotOwner.Completions).Concat(timerOwner.Completions).ToList()));

            var stopwatch = Stopwatch.StartNew();
            await reactor.StopAsync().WaitAsync(TimeSpan.FromSeconds(5));
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(5));

            // The thread has exited (Stopped completed after its last write): plain reads are safe now.
            Assert.Equal(0, reactor.InFlight);
            foreach (RecordingOwner owner in new[] { recvOwner, multishotOwner, timerOwner })
            {
                Assert.Equal(1, owner.StoppingCalls);
                (byte kind, int result, uint flags) = Assert.Single(owner.Completions);
                Assert.Equal(0u, flags & IORING_CQE_F_MORE); // the final completion
                Assert.Equal(-Libc.ECANCELED, result);
                Assert.NotEqual(0, kind);
            }

            Assert.Equal(1, idleOwner.StoppingCalls);
            Assert.Empty(idleOwner.Completions);

            // After the stop, work still runs, on the thread pool.
            var ran = new TaskCompletionSource<(bool Pool, bool Reactor)>(TaskCreationOptions.RunContinuationsAsynchronously);
            reactor.Schedule(_ => ran.SetResult((Thread.CurrentThread.IsThreadPoolThread, reactor.IsOnReactorThread)), null);
            (bool pool, bool onReactor) = await ran.Task.WaitAsync(Bound);
            Assert.True(pool);
            Assert.False(onReactor);
        }
        finally
        {
            await StopBounded(reactor);
            server1.Dispose();
            client1.Dispose();
            server2.Dispose();
            client2.Dispose();
            Marshal.FreeHGlobal(recvBuffer);
            Marshal.FreeHGlobal(ts);
        }
    }

    [SkippableFact]
    public async Task Dispatch_OwnerOnCompletionThrows_OwnerToldAndOthersStillServed()
    {
        IoUringRequirement.Ensure();
        Reactor reactor = StartReactor();
        var unhandled = new List<Exception>();
        reactor.UnhandledException = e =>
        {
            lock (unhandled)
            {
                unhandled.Add(e);
            }
        };
        try
        {
            var boom = new InvalidOperationException("boom");
            var thrower = new RecordingOwner { OnCompletionHook = (_, _, _) => throw boom };
            var doubleThrower = new RecordingOwner
            {
                OnCompletionHook = (_, _, _) => throw new InvalidOperationException("first"),
                OnHandlerExceptionHook = _ => throw new InvalidOperationException("second"),
            };
            var healthy = new RecordingOwner();
            uint healthySlot = 0;
            await OnReactor(reactor, () =>
            {
                // The throwing owners' completions come first in the same batch as the healthy one.
                PrepareNop(reactor, reactor.Register(thrower));
                PrepareNop(reactor, reactor.Register(doubleThrower));
                healthySlot = reactor.Register(healthy);
                PrepareNop(reactor, healthySlot);
            });

            await WaitOnReactor(reactor, () => healthy.Completions.Count == 1, "the healthy owner's completion");
            Assert.Same(boom, Assert.Single(await OnReactor(reactor, () => thrower.HandlerExceptions.ToList())));
            Assert.Single(await OnReactor(reactor, () => doubleThrower.HandlerExceptions.ToList()));
            lock (unhandled)
            {
                var aggregate = Assert.IsType<AggregateException>(Assert.Single(unhandled));
                Assert.Equal(new[] { "first", "second" }, aggregate.InnerExceptions.Select(e => e.Message));
            }

            // The reactor keeps serving: later operations still complete for the healthy owner.
            await OnReactor(reactor, () =>
            {
                PrepareNop(reactor, healthySlot);
                PrepareNop(reactor, healthySlot);
            });
            await WaitOnReactor(reactor, () => healthy.Completions.Count == 3, "later completions");
            Assert.Single(await OnReactor(reactor, () => thrower.HandlerExceptions.ToList()));
            Assert.False(reactor.Stopped.IsCompleted);
        }
        finally
        {
            await StopBounded(reactor);
        }
    }

    private static nint AllocTimespec(TimeSpan delay)
    {
        nint ts = Marshal.AllocHGlobal(Marshal.SizeOf<__kernel_timespec>());
        Marshal.StructureToPtr(new __kernel_timespec { tv_sec = (long)delay.TotalSeconds, tv_nsec = (delay.Ticks % TimeSpan.TicksPerSecond) * 100 }, ts, false);
        return ts;
    }

    private static unsafe void PrepareTimeout(Reactor reactor, uint slot, nint ts)
    {
        // unsafe: the SQE is the reactor's until its turn ends; ts outlives the operation (freed after stop).
        io_uring_sqe* sqe = reactor.GetSqe(slot, KindTimeout);
        sqe->opcode = IORING_OP_TIMEOUT;
        sqe->fd = -1;
        sqe->addr = (ulong)ts;
        sqe->len = 1;
        sqe->off = 0;
    }

    private static unsafe void PrepareNop(Reactor reactor, uint slot)
    {
        // unsafe: the SQE is the reactor's until its turn ends.
        io_uring_sqe* sqe = reactor.GetSqe(slot, KindNop);
        sqe->opcode = IORING_OP_NOP;
    }

    private static unsafe void PrepareRecv(Reactor reactor, uint slot, int fd, nint buffer, uint length)
    {
        // unsafe: the SQE is the reactor's until its turn ends; buffer is freed only after the reactor stopped.
        io_uring_sqe* sqe = reactor.GetSqe(slot, KindRecv);
        sqe->opcode = IORING_OP_RECV;
        sqe->fd = fd;
        sqe->addr = (ulong)buffer;
        sqe->len = length;
    }

    private static unsafe void PrepareMultishotRecv(Reactor reactor, uint slot, int fd, ushort group)
    {
        // unsafe: the SQE is the reactor's until its turn ends; the buffer group lives as long as the reactor.
        io_uring_sqe* sqe = reactor.GetSqe(slot, KindRecv);
        sqe->opcode = IORING_OP_RECV;
        sqe->fd = fd;
        sqe->ioprio = IORING_RECV_MULTISHOT;
        sqe->flags = IOSQE_BUFFER_SELECT;
        sqe->buf_group = group;
    }
}
