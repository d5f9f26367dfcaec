using System.Buffers;
using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Ring;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// The reactors of one transport factory, each with its own memory pool, shared by all its listeners.
/// A connection lives on one reactor for its whole life.
/// </summary>
internal sealed class ReactorGroup : IAsyncDisposable
{
    private readonly Reactor[] _reactors;
    private readonly MemoryPool<byte>[] _pools;
    private readonly ReactorStats[] _stats;
    private readonly (PipeOptions Input, PipeOptions Output)[] _pipeOptions;
    private readonly IMemoryPoolFactory<byte>? _memoryPoolFactory;
    private int _next = -1;

    public ReactorGroup(IoUringTransportOptions options, IMemoryPoolFactory<byte>? memoryPoolFactory, ILoggerFactory loggerFactory)
    {
        Options = options;
        _memoryPoolFactory = memoryPoolFactory;
        Logger = loggerFactory.CreateLogger(IoUringLog.Category);
        AppScheduler = options.UnsafePreferInlineScheduling ? PipeScheduler.Inline : PipeScheduler.ThreadPool;
        _reactors = new Reactor[options.ReactorCount];
        _pools = new MemoryPool<byte>[options.ReactorCount];
        _stats = new ReactorStats[options.ReactorCount];
        _pipeOptions = new (PipeOptions, PipeOptions)[options.ReactorCount];
        for (int i = 0; i < _reactors.Length; i++)
        {
            var reactorOptions = new ReactorOptions
            {
                Ring = new RingOptions
                {
                    SqEntries = (uint)options.SubmissionQueueEntries,
                    CqEntries = (uint)options.CompletionQueueEntries,
                    DesiredFlags = options.UseDeferTaskRun ? RingOptions.DefaultFlags : RingOptions.CoopTaskRunFlags,
                    RegisterRingFd = options.UseRegisteredRingFd,
                },

                // No provided buffer ring at all when receives go straight into the input pipe.
                ReceiveBufferCount = options.UseProvidedBuffers ? options.ReceiveBufferCount : 0,
                ReceiveBufferSize = options.ReceiveBufferSize,
            };
            _stats[i] = new ReactorStats();
            _reactors[i] = new Reactor(reactorOptions, i)
            {
                UnhandledException = e => IoUringLog.ReactorException(Logger, e),
            };
        }
    }

    public IoUringTransportOptions Options { get; }

    /// <summary>Descriptors accepting may not take, and the rule that all acceptors back off together.</summary>
    public AcceptGate AcceptGate { get; } = new();

    /// <summary>Idle pipes for zero-copy file sends (IORING_OP_SPLICE), shared by every connection of the group.</summary>
    public SplicePipePool SplicePipes { get; } = new(maxIdle: 64);

    public ILogger Logger { get; }

    /// <summary>Where application continuations run: inline on the reactor, or the thread pool.</summary>
    public PipeScheduler AppScheduler { get; }

    public int Count => _reactors.Length;

    public Reactor this[int index] => _reactors[index];

    public void Start()
    {
        for (int i = 0; i < _reactors.Length; i++)
        {
            try
            {
                _reactors[i].Start();
                _pools[i] = _memoryPoolFactory?.Create(new MemoryPoolOptions { Owner = "iouring" }) ?? MemoryPool<byte>.Shared;
                long maxRead = Options.MaxReadBufferSize ?? 0;
                long maxWrite = Options.MaxWriteBufferSize ?? 0;

                // Input: we write on the reactor, the app reads on its scheduler; pause at MaxReadBufferSize,
                // resume at half. Output: the app writes, we read on the reactor (or inline, see SendScheduler);
                // likewise MaxWriteBufferSize.
                _pipeOptions[i] = (
                    new PipeOptions(_pools[i], AppScheduler, _reactors[i], maxRead, maxRead / 2, useSynchronizationContext: false),
                    new PipeOptions(_pools[i], new SendScheduler(_reactors[i], Options.UseDirectSend), AppScheduler, maxWrite, maxWrite / 2, useSynchronizationContext: false));
            }
            catch
            {
                for (int j = 0; j < i; j++)
                {
                    _reactors[j].StopAsync().GetAwaiter().GetResult();
                }

                AcceptGate.Dispose();
                throw;
            }
        }
    }

    /// <summary>Round-robin choice of a reactor for a connection that did not arrive on a reactor's own listener.</summary>
    public int NextIndex() => (int)((uint)Interlocked.Increment(ref _next) % (uint)_reactors.Length);

    public MemoryPool<byte> PoolFor(int reactorIndex) => _pools[reactorIndex];

    public ReactorStats StatsFor(int reactorIndex) => _stats[reactorIndex];

    /// <summary>The pipe options shared by every connection of a reactor.</summary>
    public (PipeOptions Input, PipeOptions Output) PipeOptionsFor(int reactorIndex) => _pipeOptions[reactorIndex];

    /// <summary>Where receives land: provided buffers (multishot or single-shot receive) or the input pipe.</summary>
    public ReceiveMode ReceiveMode => !Options.UseProvidedBuffers
        ? ReceiveMode.IntoPipe
        : Options.UseMultishotReceive ? ReceiveMode.MultishotProvided : ReceiveMode.SingleShotProvided;

    /// <summary>The ring features in use, as the reactors created them (after the kernel's refusals).</summary>
    public string DescribeFeatures()
    {
        uint flags = _reactors[0].RingSetupFlags;
        List<string> parts = [];
        void Add(uint flag, string name)
        {
            if ((flags & flag) != 0)
            {
                parts.Add(name);
            }
        }

        Add(IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER");
        Add(IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN");
        Add(IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN");
        Add(IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL");
        Add(IORING_SETUP_NO_SQARRAY, "NO_SQARRAY");
        parts.Add(_reactors[0].RingFdRegistered ? "registered ring fd" : "unregistered ring fd");
        parts.Add(Options.UseMultishotAccept ? "multishot accept" : $"single-shot accept ({Acceptor.SingleShotDepth} in flight per listen socket)");
        parts.Add(ReceiveMode switch
        {
            ReceiveMode.MultishotProvided => $"multishot recv over {Options.ReceiveBufferCount} x {Options.ReceiveBufferSize} B provided buffers",
            ReceiveMode.SingleShotProvided => $"single-shot recv over {Options.ReceiveBufferCount} x {Options.ReceiveBufferSize} B provided buffers",
            _ => "single-shot recv into the input pipe (no provided buffers)",
        });
        parts.Add(Options.UnsafePreferInlineScheduling ? "inline scheduling" : "thread-pool scheduling");
        parts.Add(Options.UseDirectSend ? "direct send from flushing threads" : "every send through the ring");
        return string.Join(", ", parts);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (Reactor reactor in _reactors)
        {
            await reactor.StopAsync().ConfigureAwait(false);
        }

        AcceptGate.Dispose();

        // Every connection has closed (and returned its pipe) or deliberately leaked what the kernel may still use.
        SplicePipes.Dispose();

        foreach (MemoryPool<byte>? pool in _pools)
        {
            if (pool is not null && !ReferenceEquals(pool, MemoryPool<byte>.Shared))
            {
                pool.Dispose();
            }
        }
    }
}

/// <summary>How connections receive (from <see cref="IoUringTransportOptions"/>).</summary>
internal enum ReceiveMode
{
    /// <summary>One multishot IORING_OP_RECV with buffer select per connection.</summary>
    MultishotProvided,

    /// <summary>A single-shot IORING_OP_RECV with buffer select, re-armed after each completion.</summary>
    SingleShotProvided,

    /// <summary>A single-shot IORING_OP_RECV into pinned input pipe memory, re-armed after each completion.</summary>
    IntoPipe,
}
