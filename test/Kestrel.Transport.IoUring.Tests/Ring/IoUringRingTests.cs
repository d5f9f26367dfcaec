using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Tests.Ring;

/// <summary>One raw ring against the real kernel: queue limits, overflow, setup degradation.</summary>
public class IoUringRingTests
{
    [SkippableFact]
    public void GetSqe_FarMoreInFlightThanSqEntries_EveryOperationCompletesExactlyOnce()
    {
        IoUringRequirement.Ensure();
        const int Operations = 10_000;
        RingTestHelpers.RunOnOwnThread(() =>
        {
            using var ring = new IoUringRing(new RingOptions { SqEntries = 8, CqEntries = 16384 });
            Assert.Equal(8u, ring.SqEntries);
            unsafe
            {
                // unsafe: the timespec lives in native memory freed only after every timeout has completed,
                // so the kernel never reads freed memory even if it re-reads it after prep.
                var ts = (__kernel_timespec*)NativeMemory.Alloc((nuint)sizeof(__kernel_timespec));
                try
                {
                    *ts = new __kernel_timespec { tv_sec = 0, tv_nsec = 50_000_000 };
                    for (int i = 0; i < Operations; i++)
                    {
                        // unsafe: GetSqe returns an entry of the mapped SQ that stays ours until the next submit.
                        io_uring_sqe* sqe = ring.GetSqe();
                        sqe->opcode = IORING_OP_TIMEOUT;
                        sqe->fd = -1;
                        sqe->addr = (ulong)ts;
                        sqe->len = 1;
                        sqe->off = 0; // a pure timer: complete on expiry, not after N completions
                        sqe->user_data = (ulong)i + 1;
                    }

                    // The SQ holds 8: everything but the last few went to the kernel through GetSqe's auto-flush.
                    Assert.True(ring.PendingSubmissions <= 8, $"{ring.PendingSubmissions} SQEs still pending");
                    Assert.True(ring.EnterCalls >= (Operations / 8) - 1, $"only {ring.EnterCalls} enters for {Operations} SQEs on an 8-entry SQ");

                    var seen = new int[Operations + 1];
                    int received = 0;
                    Span<io_uring_cqe> cqes = new io_uring_cqe[256];
                    DateTime deadline = DateTime.UtcNow.AddSeconds(8);
                    while (received < Operations && DateTime.UtcNow < deadline)
                    {
                        int ret = ring.SubmitAndWait(1, 100_000_000);
                        Assert.True(ret >= 0 || -ret is Libc.ETIME or Libc.EINTR, $"io_uring_enter: {ret}");
                        int n;
                        while ((n = ring.CopyCompletions(cqes)) > 0)
                        {
                            for (int i = 0; i < n; i++)
                            {
                                ulong ud = cqes[i].user_data;
                                Assert.InRange(ud, 1ul, (ulong)Operations);
                                Assert.Equal(-Libc.ETIME, cqes[i].res);
                                seen[ud]++;
                                received++;
                            }
                        }
                    }

                    Assert.Equal(Operations, received);
                    for (int i = 1; i <= Operations; i++)
                    {
                        Assert.True(seen[i] == 1, $"user_data {i} completed {seen[i]} times");
                    }

                    Assert.Equal(0u, ring.CqDropped);
                }
                finally
                {
                    NativeMemory.Free(ts);
                }
            }
        }, TimeSpan.FromSeconds(20));
    }

    [SkippableFact]
    public void CopyCompletions_CqOverflowedByUnreapedNops_DeliversEveryCompletionExactlyOnce()
    {
        IoUringRequirement.Ensure();
        const int Operations = 4096;
        RingTestHelpers.RunOnOwnThread(() =>
        {
            using var ring = new IoUringRing(new RingOptions { SqEntries = 4, CqEntries = 8 });
            Assert.Equal(8u, ring.CqEntries);
            Assert.True((ring.Features & IORING_FEAT_NODROP) != 0, "The probe requires IORING_FEAT_NODROP.");
            unsafe
            {
                for (int i = 0; i < Operations; i++)
                {
                    // unsafe: GetSqe returns an entry of the mapped SQ that stays ours until the next submit.
                    io_uring_sqe* sqe = ring.GetSqe();
                    sqe->opcode = IORING_OP_NOP;
                    sqe->user_data = (ulong)i + 1;
                }
            }

            int submitted = ring.Submit();
            Assert.True(submitted >= 0, $"io_uring_enter: {submitted}");
            Assert.Equal(0u, ring.PendingSubmissions);

            // Nothing was reaped while 4096 NOPs completed into an 8-entry CQ: the kernel holds the rest.
            Assert.True(ring.CqOverflowPending || ring.CqOverflows > 0, "Expected the CQ to have overflowed.");

            var seen = new int[Operations + 1];
            int received = 0;
            Span<io_uring_cqe> cqes = new io_uring_cqe[64];
            for (int round = 0; round < 100_000 && received < Operations; round++)
            {
                int n = ring.CopyCompletions(cqes);
                if (n == 0)
                {
                    // Completions may only be posted on an enter with GETEVENTS (DEFER_TASKRUN).
                    int ret = ring.SubmitAndWait(1, 10_000_000);
                    Assert.True(ret >= 0 || -ret is Libc.ETIME or Libc.EINTR, $"io_uring_enter: {ret}");
                    continue;
                }

                for (int i = 0; i < n; i++)
                {
                    ulong ud = cqes[i].user_data;
                    Assert.InRange(ud, 1ul, (ulong)Operations);
                    Assert.Equal(0, cqes[i].res);
                    seen[ud]++;
                    received++;
                }
            }

            Assert.Equal(Operations, received);
            for (int i = 1; i <= Operations; i++)
            {
                Assert.True(seen[i] == 1, $"user_data {i} completed {seen[i]} times");
            }

            Assert.True(ring.CqOverflows > 0, "CqOverflows did not count the overflow flushes.");
            Assert.Equal(0u, ring.CqDropped);
            Assert.False(ring.CqOverflowPending);
            Assert.Equal(0, ring.ReadyCompletions);
        });
    }

    [SkippableTheory]
    [InlineData(IORING_SETUP_DEFER_TASKRUN)]
    [InlineData(IORING_SETUP_SINGLE_ISSUER)]
    public void Constructor_KernelRefusesFlag_ComesUpWithoutItAndReportsItDropped(uint refused)
    {
        IoUringRequirement.Ensure();
        RingTestHelpers.RunOnOwnThread(() =>
        {
            using var ring = new IoUringRing(new RingOptions { SqEntries = 8, CqEntries = 16, SimulateRefusedFlags = refused });
            Assert.Equal(0u, ring.SetupFlags & refused);
            Assert.Equal(refused, ring.DroppedFlags & refused);
            Assert.Equal(0u, ring.SetupFlags & ring.DroppedFlags);
            if (refused == IORING_SETUP_SINGLE_ISSUER)
            {
                // DEFER_TASKRUN cannot exist without SINGLE_ISSUER.
                Assert.Equal(0u, ring.SetupFlags & IORING_SETUP_DEFER_TASKRUN);
                Assert.Equal(IORING_SETUP_DEFER_TASKRUN, ring.DroppedFlags & IORING_SETUP_DEFER_TASKRUN);
            }
            else
            {
                // Only what had to go is gone.
                Assert.Equal(IORING_SETUP_SINGLE_ISSUER, ring.SetupFlags & IORING_SETUP_SINGLE_ISSUER);
            }

            // The flags that are never optional stay.
            Assert.Equal(IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP, ring.SetupFlags & (IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP));
            AssertNopRoundTrip(ring, 0xD1);
        });
    }

    [SkippableFact]
    public void Dispose_ManyRingsOnOneThread_ReleasesRegisteredRingFd()
    {
        IoUringRequirement.Ensure();
        RingTestHelpers.RunOnOwnThread(() =>
        {
            // A thread has 16 registered-ring slots (IO_RINGFD_REG_MAX). A ring that does not unregister
            // its fd on Dispose keeps its slot, and its whole ring alive, until the thread exits.
            for (int i = 0; i < 40; i++)
            {
                using var ring = new IoUringRing(new RingOptions { SqEntries = 8, CqEntries = 16, RegisterRingFd = true });
                Assert.True(ring.RingFdRegistered, $"ring {i} could not register its fd: earlier rings leaked their slots");
                AssertNopRoundTrip(ring, (ulong)i + 1);
            }
        });
    }

    private static unsafe void AssertNopRoundTrip(IoUringRing ring, ulong userData)
    {
        // unsafe: GetSqe returns an entry of the mapped SQ that stays ours until the next submit.
        io_uring_sqe* sqe = ring.GetSqe();
        sqe->opcode = IORING_OP_NOP;
        sqe->user_data = userData;
        Assert.Equal(1, ring.SubmitAndWait(1, 1_000_000_000));
        Span<io_uring_cqe> cqes = stackalloc io_uring_cqe[4];
        Assert.Equal(1, ring.CopyCompletions(cqes));
        Assert.Equal(userData, cqes[0].user_data);
        Assert.Equal(0, cqes[0].res);
    }
}
