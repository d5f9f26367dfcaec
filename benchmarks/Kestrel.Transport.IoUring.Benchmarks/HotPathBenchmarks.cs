using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Transport.Internal;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>
/// The transport's per-request data movement, alone: gathering a flushed response into iovecs (pinning
/// every segment), copying a received request out of a kernel buffer into the input pipe, and one
/// reactor loop turn that dispatches a batch of completions to an owner.
/// </summary>
[MemoryDiagnoser]
public unsafe class HotPathBenchmarks
{
    private const int Segments = 16;
    private const int TurnBatch = 32;

    private ReadOnlySequence<byte> _response;
    private readonly MemoryHandle[] _pins = new MemoryHandle[64];
    private iovec* _iovecs;
    private byte[] _request = null!;
    private Pipe _pipe = null!;
    private Reactor _reactor = null!;
    private TurnOwner _owner = null!;

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkGuard.RequireIoUring();

        // A 64 KiB response in 16 pinned 4 KiB blocks, as Kestrel's pool hands them out.
        Segment? first = null, last = null;
        for (int i = 0; i < Segments; i++)
        {
            byte[] block = GC.AllocateArray<byte>(4096, pinned: true);
            Memory<byte> memory = MemoryMarshal.CreateFromPinnedArray(block, 0, block.Length);
            last = last is null ? (first = new Segment(memory, 0)) : last.Append(memory);
        }

        _response = new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
        _iovecs = (iovec*)NativeMemory.Alloc((nuint)(64 * sizeof(iovec)));
        if (GatherResponse() != Segments * 4096)
        {
            BenchmarkGuard.Fail("Gather did not describe every byte of the response.");
        }

        _request = new byte[180];
        "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\nConnection: keep-alive\r\n\r\n"u8.CopyTo(_request);
        _pipe = new Pipe(new PipeOptions(readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline, useSynchronizationContext: false));
        if (ReceiveIntoPipe() != _request.Length)
        {
            BenchmarkGuard.Fail("The request did not arrive whole in the pipe.");
        }

        _reactor = new Reactor(new ReactorOptions { ReceiveBufferCount = 0 }, 0);
        _reactor.Start();
        _owner = new TurnOwner(_reactor);
        if (ReactorTurn() != TurnBatch)
        {
            BenchmarkGuard.Fail("The reactor did not dispatch every completion of the turn.");
        }
    }

    [Benchmark(Description = "send gather: 16 segments into iovecs (pin + unpin)")]
    public long GatherResponse()
    {
        int count = HotPath.Gather(_response, _pins, _iovecs, 64);
        long bytes = 0;
        for (int i = 0; i < count; i++)
        {
            bytes += (long)_iovecs[i].iov_len;
            _pins[i].Dispose();
        }

        return bytes;
    }

    [Benchmark(Description = "receive into pipe: copy 180 B + flush + read + advance")]
    public long ReceiveIntoPipe()
    {
        HotPath.CopyInto(_pipe.Writer, _request);
        ValueTask<FlushResult> flush = _pipe.Writer.FlushAsync();
        if (!flush.IsCompletedSuccessfully)
        {
            BenchmarkGuard.Fail("An unbounded pipe's flush must complete synchronously.");
        }

        _pipe.Reader.TryRead(out ReadResult result);
        long length = result.Buffer.Length;
        _pipe.Reader.AdvanceTo(result.Buffer.End);
        return length;
    }

    [Benchmark(OperationsPerInvoke = TurnBatch, Description = "reactor turn: 32 NOP completions dispatched (per completion, wake included)")]
    public int ReactorTurn() => _owner.RunTurn(TurnBatch);

    [GlobalCleanup]
    public void Cleanup()
    {
        _reactor.StopAsync().GetAwaiter().GetResult();
        NativeMemory.Free(_iovecs);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }

    /// <summary>Issues a batch of NOPs from the reactor thread and counts their completions.</summary>
    private sealed class TurnOwner : IRingOwner
    {
        private readonly Reactor _reactor;
        private readonly ManualResetEventSlim _done = new();
        private readonly Action<object?> _issue;
        private uint _slot;
        private int _pending;
        private int _completed;

        public TurnOwner(Reactor reactor)
        {
            _reactor = reactor;
            _issue = static state => ((TurnOwner)state!).Issue();
            using var registered = new ManualResetEventSlim();
            reactor.Schedule(static state =>
            {
                var (owner, signal) = ((TurnOwner, ManualResetEventSlim))state!;
                owner._slot = owner._reactor.Register(owner);
                signal.Set();
            }, (this, registered));
            registered.Wait();
        }

        public int RunTurn(int batch)
        {
            _done.Reset();
            _pending = batch;
            _completed = 0;
            _reactor.Schedule(_issue, this);
            _done.Wait();
            return _completed;
        }

        private void Issue()
        {
            for (int i = 0; i < _pending; i++)
            {
                io_uring_sqe* sqe = _reactor.GetSqe(_slot, 1);
                sqe->opcode = IORING_OP_NOP;
            }
        }

        public void OnCompletion(byte kind, int result, uint flags)
        {
            if (++_completed == _pending)
            {
                _done.Set();
            }
        }

        public void OnHandlerException(Exception exception) => BenchmarkGuard.Fail(exception.ToString());

        public void OnReactorStopping()
        {
        }
    }
}
