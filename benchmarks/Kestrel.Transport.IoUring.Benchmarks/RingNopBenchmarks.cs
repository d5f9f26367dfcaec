using BenchmarkDotNet.Attributes;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>
/// Pure ring overhead: IORING_OP_NOP prepared with GetSqe, submitted and reaped with one io_uring_enter
/// per batch, completions copied out with one CQ head update. Reported per NOP.
/// </summary>
[MemoryDiagnoser]
public unsafe class RingNopBenchmarks
{
    private IoUringRing _ring = null!;
    private io_uring_cqe[] _cqes = null!;
    private ulong _nextUserData;
    private int _ownerThreadId;

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkGuard.RequireIoUring();
        _ownerThreadId = Environment.CurrentManagedThreadId;
        _ring = new IoUringRing(new RingOptions { SqEntries = 256, CqEntries = 1024 });
        _cqes = new io_uring_cqe[256];
        Console.WriteLine($"// ring: setup flags 0x{_ring.SetupFlags:x}, dropped 0x{_ring.DroppedFlags:x}, registered fd {_ring.RingFdRegistered}, thread {_ownerThreadId}");

        ProveSingleIssuerGuard();

        // Validate before timing: every batch size returns exactly its NOPs, each once, successfully.
        foreach (int batch in (int[])[1, 32, 256])
        {
            ulong first = _nextUserData + 1;
            SubmitNops(batch);
            var seen = new HashSet<ulong>();
            int received = 0;
            while (received < batch)
            {
                int n = _ring.CopyCompletions(_cqes);
                if (n == 0)
                {
                    BenchmarkGuard.Fail($"a batch of {batch} NOPs returned only {received} completions");
                }

                for (int i = 0; i < n; i++)
                {
                    if (_cqes[i].res != 0 || _cqes[i].user_data < first || _cqes[i].user_data >= first + (ulong)batch || !seen.Add(_cqes[i].user_data))
                    {
                        BenchmarkGuard.Fail($"unexpected completion user_data={_cqes[i].user_data} res={_cqes[i].res} in a batch of {batch}");
                    }
                }

                received += n;
            }
        }
    }

    [Benchmark(OperationsPerInvoke = 1, Baseline = true, Description = "NOP, 1 per enter")]
    public int Nop1() => RoundTrip(1);

    [Benchmark(OperationsPerInvoke = 32, Description = "NOP, 32 per enter")]
    public int Nop32() => RoundTrip(32);

    [Benchmark(OperationsPerInvoke = 256, Description = "NOP, 256 per enter")]
    public int Nop256() => RoundTrip(256);

    [GlobalCleanup]
    public void Cleanup()
    {
        BenchmarkGuard.RequireOwnerThread(_ownerThreadId, "[GlobalCleanup]");
        Console.WriteLine($"// ring: {_ring.EnterCalls} enters for {_nextUserData} NOPs, cleanup on thread {Environment.CurrentManagedThreadId}");
        _ring.Dispose();
    }

    /// <summary>
    /// The per-invocation check in SubmitNops relies on the kernel refusing io_uring_enter from any thread
    /// but the ring's creator (SINGLE_ISSUER). Show that the refusal is really in force for this ring.
    /// </summary>
    private void ProveSingleIssuerGuard()
    {
        if ((_ring.SetupFlags & IORING_SETUP_SINGLE_ISSUER) == 0)
        {
            Console.WriteLine("// ring: SINGLE_ISSUER refused by this kernel; thread affinity is checked only in [GlobalCleanup]");
            return;
        }

        int result = 0;
        var intruder = new Thread(() =>
        {
            // unsafe: no SQEs and no argument: the call only asks the kernel whether this thread may enter.
            result = io_uring_enter(_ring.RingFd, 0, 0, IORING_ENTER_GETEVENTS, null, 0) < 0
                ? -System.Runtime.InteropServices.Marshal.GetLastPInvokeError()
                : 0;
        });
        intruder.Start();
        intruder.Join();
        if (result != -Libc.EEXIST)
        {
            BenchmarkGuard.Fail($"io_uring_enter from another thread returned {result}, expected -EEXIST");
        }
    }

    private int RoundTrip(int count)
    {
        SubmitNops(count);
        int received = 0;
        while (received < count)
        {
            int n = _ring.CopyCompletions(_cqes);
            if (n == 0)
            {
                BenchmarkGuard.Fail($"io_uring_enter waited for {count} completions but {received} arrived");
            }

            received += n;
        }

        return received;
    }

    private void SubmitNops(int count)
    {
        for (int i = 0; i < count; i++)
        {
            // unsafe: GetSqe returns an entry of the mapped SQ that is ours until the submit below.
            io_uring_sqe* sqe = _ring.GetSqe();
            sqe->opcode = IORING_OP_NOP;
            sqe->user_data = ++_nextUserData;
        }

        // One enter submits the batch and waits for all of it. From a thread other than the ring's creator
        // a SINGLE_ISSUER ring refuses with EEXIST, so this check also proves BenchmarkDotNet's threading.
        int submitted = _ring.SubmitAndWait((uint)count, -1);
        if (submitted != count)
        {
            BenchmarkGuard.Fail(submitted < 0
                ? $"io_uring_enter failed: {ErrnoText.Describe(-submitted)}"
                : $"io_uring_enter consumed {submitted} of {count} SQEs");
        }
    }
}
