using System.Net;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>
/// Handing receive buffers back to the kernel: the accounting a completion does (OnConsumed), Recycle
/// (one descriptor written into the buffer ring) and Publish (one release store of the ring tail).
/// Reported per buffer. No receive selects from the group while timing, so the kernel does not touch the
/// ring then; Setup proves the same path with a real receive first.
/// </summary>
[MemoryDiagnoser]
public unsafe class ProvidedBufferBenchmarks
{
    private const ushort GroupId = 1;
    private const int Count = 256;
    private const int Size = 2048;

    private IoUringRing _ring = null!;
    private ProvidedBufferRing _buffers = null!;
    private int _next;
    private int _ownerThreadId;

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkGuard.RequireIoUring();
        _ownerThreadId = Environment.CurrentManagedThreadId;
        _ring = new IoUringRing(new RingOptions { SqEntries = 8, CqEntries = 16 });
        _buffers = new ProvidedBufferRing(_ring, GroupId, Count, Size);
        ValidateWithRealReceive();
    }

    [Benchmark(OperationsPerInvoke = 1, Baseline = true, Description = "recycle + publish, each")]
    public void RecycleAndPublishEach()
    {
        _buffers.OnConsumed();
        _buffers.Recycle((ushort)(_next++ & (Count - 1)));
        _buffers.Publish();
    }

    [Benchmark(OperationsPerInvoke = 32, Description = "recycle x32 + one publish")]
    public void Recycle32PublishOnce()
    {
        for (int i = 0; i < 32; i++)
        {
            _buffers.OnConsumed();
            _buffers.Recycle((ushort)(_next++ & (Count - 1)));
        }

        _buffers.Publish();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        BenchmarkGuard.RequireOwnerThread(_ownerThreadId, "[GlobalCleanup]");
        if (_buffers.KernelOwned != Count || _buffers.UserOwned != 0)
        {
            BenchmarkGuard.Fail($"accounting drifted: {_buffers.KernelOwned} kernel-owned, {_buffers.UserOwned} user-owned");
        }

        _buffers.Dispose();
        _ring.Dispose();
    }

    /// <summary>A single-shot RECV that selects a buffer from the group; its bytes must be the ones sent.</summary>
    private void ValidateWithRealReceive()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using Socket server = listener.Accept();
        byte[] ping = "ping"u8.ToArray();
        client.Send(ping);

        // unsafe: GetSqe returns an entry of the mapped SQ that is ours until the submit below.
        io_uring_sqe* sqe = _ring.GetSqe();
        sqe->opcode = IORING_OP_RECV;
        sqe->fd = (int)server.SafeHandle.DangerousGetHandle();
        sqe->flags = IOSQE_BUFFER_SELECT;
        sqe->buf_group = GroupId;
        sqe->user_data = 42;
        int ret = _ring.SubmitAndWait(1, 5_000_000_000);
        Span<io_uring_cqe> cqes = stackalloc io_uring_cqe[1];
        if (ret != 1 || _ring.CopyCompletions(cqes) != 1)
        {
            BenchmarkGuard.Fail($"the validation receive did not complete (enter returned {ret})");
        }

        io_uring_cqe cqe = cqes[0];
        if (cqe.user_data != 42 || cqe.res != ping.Length || (cqe.flags & IORING_CQE_F_BUFFER) == 0)
        {
            BenchmarkGuard.Fail($"unexpected validation completion: user_data={cqe.user_data} res={cqe.res} flags=0x{cqe.flags:x}");
        }

        ushort bid = (ushort)(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
        _buffers.OnConsumed();
        if (!_buffers.GetData(bid, cqe.res).SequenceEqual(ping))
        {
            BenchmarkGuard.Fail("the provided buffer does not hold the bytes sent");
        }

        _buffers.Recycle(bid);
        _buffers.Publish();
        if (_buffers.KernelOwned != Count || _buffers.UserOwned != 0)
        {
            BenchmarkGuard.Fail($"after recycle + publish: {_buffers.KernelOwned} kernel-owned, {_buffers.UserOwned} user-owned");
        }
    }
}
