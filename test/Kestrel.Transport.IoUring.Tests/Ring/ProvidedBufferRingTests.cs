using System.Net.Sockets;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Tests.Ring;

public class ProvidedBufferRingTests
{
    private const ushort GroupId = 7;
    private const int BufferCount = 4;
    private const int BufferSize = 256;

    [SkippableFact]
    public void MultishotRecv_RingExhaustedThenRecycled_EndsWithEnobufsThenDeliversRestIntact()
    {
        IoUringRequirement.Ensure();
        RingTestHelpers.RunOnOwnThread(() =>
        {
            (Socket server, Socket client) = RingTestHelpers.LoopbackPair();
            using var serverDisposer = server;
            using var clientDisposer = client;
            using var ring = new IoUringRing(new RingOptions { SqEntries = 16, CqEntries = 64 });
            using var buffers = new ProvidedBufferRing(ring, GroupId, BufferCount, BufferSize);
            Assert.Equal(BufferCount, buffers.KernelOwned);
            Assert.Equal(0, buffers.UserOwned);

            // More data than the ring can hold, all queued before the receive is armed, so exhaustion
            // is deterministic: 4 x 256 bytes fill every buffer and the rest finds none.
            byte[] sent = RingTestHelpers.Pattern(2000);
            Assert.Equal(sent.Length, client.Send(sent));
            DateTime queuedBy = DateTime.UtcNow.AddSeconds(5);
            while (server.Available < sent.Length)
            {
                Assert.True(DateTime.UtcNow < queuedBy, "loopback data did not arrive");
                Thread.Sleep(1);
            }

            var received = new List<byte>();
            var held = new List<ushort>();
            int fd = RingTestHelpers.Fd(server);

            // Phase 1: never recycle.
            ArmMultishotRecv(ring, fd, 1);
            (int finalResult, int completions) = Reap(ring, 1, cqe =>
            {
                ushort bid = TakeBuffer(buffers, cqe);
                received.AddRange(buffers.GetData(bid, cqe.res).ToArray());
                held.Add(bid);
            });

            Assert.Equal(-Libc.ENOBUFS, finalResult);
            Assert.Equal(BufferCount, completions);
            Assert.Equal(BufferCount * BufferSize, received.Count);
            Assert.Equal(BufferCount, held.Distinct().Count());
            Assert.Equal(0, buffers.KernelOwned);
            Assert.Equal(BufferCount, buffers.UserOwned);

            foreach (ushort bid in held)
            {
                buffers.Recycle(bid);
            }

            // Recycled but unpublished: ours no longer, and not yet the kernel's.
            Assert.Equal(0, buffers.UserOwned);
            Assert.Equal(0, buffers.KernelOwned);
            Assert.True(buffers.HasUnpublished);
            buffers.Publish();
            Assert.False(buffers.HasUnpublished);
            Assert.Equal(BufferCount, buffers.KernelOwned);

            // Phase 2: re-arm, recycling each buffer as soon as its bytes are copied.
            ArmMultishotRecv(ring, fd, 2);
            bool shutDown = false;
            (finalResult, _) = Reap(ring, 2, cqe =>
            {
                if (cqe.res > 0 || (cqe.flags & IORING_CQE_F_BUFFER) != 0)
                {
                    ushort bid = TakeBuffer(buffers, cqe);
                    received.AddRange(buffers.GetData(bid, Math.Max(cqe.res, 0)).ToArray());
                    buffers.Recycle(bid);
                    buffers.Publish();
                }

                if (received.Count == sent.Length && !shutDown)
                {
                    // Everything arrived: the peer's FIN ends the multishot with res 0.
                    shutDown = true;
                    client.Shutdown(SocketShutdown.Send);
                }
            }, onIdle: () =>
            {
                if (received.Count == sent.Length && !shutDown)
                {
                    shutDown = true;
                    client.Shutdown(SocketShutdown.Send);
                }
            });

            Assert.Equal(0, finalResult);
            Assert.Equal(sent, received.ToArray());
            Assert.Equal(BufferCount, buffers.KernelOwned);
            Assert.Equal(0, buffers.UserOwned);
        });
    }

    private static unsafe void ArmMultishotRecv(IoUringRing ring, int fd, ulong userData)
    {
        // unsafe: GetSqe returns an entry of the mapped SQ that stays ours until the next submit.
        io_uring_sqe* sqe = ring.GetSqe();
        sqe->opcode = IORING_OP_RECV;
        sqe->fd = fd;
        sqe->ioprio = IORING_RECV_MULTISHOT;
        sqe->flags = IOSQE_BUFFER_SELECT;
        sqe->buf_group = GroupId;
        sqe->len = 0; // the selected buffer's length
        sqe->user_data = userData;
    }

    private static ushort TakeBuffer(ProvidedBufferRing buffers, io_uring_cqe cqe)
    {
        Assert.True((cqe.flags & IORING_CQE_F_BUFFER) != 0, $"a receive of {cqe.res} bytes named no buffer");
        buffers.OnConsumed();
        return (ushort)(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    }

    /// <summary>
    /// Reaps completions of <paramref name="userData"/> until its final one (no F_MORE); returns the final
    /// result and how many non-final completions came before it.
    /// </summary>
    private static (int FinalResult, int Completions) Reap(IoUringRing ring, ulong userData, Action<io_uring_cqe> onData, Action? onIdle = null)
    {
        Span<io_uring_cqe> cqes = new io_uring_cqe[32];
        int completions = 0;
        DateTime deadline = DateTime.UtcNow.AddSeconds(5);
        while (DateTime.UtcNow < deadline)
        {
            int ret = ring.SubmitAndWait(1, 50_000_000);
            Assert.True(ret >= 0 || -ret is Libc.ETIME or Libc.EINTR, $"io_uring_enter: {ret}");
            int n = ring.CopyCompletions(cqes);
            if (n == 0)
            {
                onIdle?.Invoke();
            }

            for (int i = 0; i < n; i++)
            {
                io_uring_cqe cqe = cqes[i];
                Assert.Equal(userData, cqe.user_data);
                if ((cqe.flags & IORING_CQE_F_MORE) == 0)
                {
                    Assert.True(i == n - 1, "completions after the final one");
                    return (cqe.res, completions);
                }

                onData(cqe);
                completions++;
            }
        }

        Assert.Fail($"no final completion for user_data {userData} within 5 s");
        return default;
    }
}
