using System.Diagnostics;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>
/// Cross-thread post to an idle reactor: Schedule from the benchmark thread, the reactor wakes (eventfd read
/// armed in its ring), runs the item, and the benchmark thread sees it ran. One operation is one round trip.
/// </summary>
[MemoryDiagnoser]
public class ReactorWakeBenchmarks
{
    private static readonly Action<object?> s_increment = static state =>
    {
        var box = (StrongBox<long>)state!;
        Volatile.Write(ref box.Value, box.Value + 1); // release for the spinning poster; only the reactor thread writes
    };

    private static readonly Action<object?> s_set = static state => ((ManualResetEventSlim)state!).Set();

    private readonly StrongBox<long> _ran = new();
    private readonly ManualResetEventSlim _done = new(false, spinCount: 0); // block in the kernel, never spin
    private Reactor _reactor = null!;
    private long _posted;  // items posted by PostAndSpin, which the reactor counts in _ran
    private long _blocked; // items posted by PostAndBlock
    private long _wakesAtStart;
    private long _postsAtStart;

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkGuard.RequireIoUring();
        _reactor = new Reactor(new ReactorOptions { Ring = new RingOptions { SqEntries = 64, CqEntries = 256 }, ReceiveBufferCount = 0 }, 0);
        _reactor.Start();

        // Validate before timing: an item posted from here runs on the reactor thread, promptly.
        var onReactor = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _reactor.Schedule(_ => onReactor.SetResult(_reactor.IsOnReactorThread), null);
        if (!onReactor.Task.Wait(TimeSpan.FromSeconds(5)) || !onReactor.Task.Result)
        {
            BenchmarkGuard.Fail("a posted item did not run on the reactor thread within 5 s");
        }

        PostAndSpin();
        PostAndBlock();
        _wakesAtStart = _reactor.WakeWrites;
        _postsAtStart = _posted + _blocked;
    }

    /// <summary>The poster spins until the item ran: post, wake, run and cache-line transfer back.</summary>
    [Benchmark(Description = "post + wake, poster spins")]
    public long PostAndSpin()
    {
        long expected = ++_posted;
        _reactor.Schedule(s_increment, _ran);
        var spinner = default(SpinWait);
        long start = 0;
        while (Volatile.Read(ref _ran.Value) != expected) // acquire: pairs with the reactor's release write
        {
            spinner.SpinOnce(sleep1Threshold: -1);
            if (spinner.Count % 4096 == 0)
            {
                // A lost wake-up would hang the run: fail it instead (checked rarely, off the fast path).
                start = start == 0 ? Stopwatch.GetTimestamp() : start;
                if (Stopwatch.GetElapsedTime(start) > TimeSpan.FromSeconds(5))
                {
                    BenchmarkGuard.Fail($"item {expected} did not run within 5 s");
                }
            }
        }

        return expected;
    }

    /// <summary>The poster blocks until the item ran: adds a futex wake-up of the poster on the way back.</summary>
    [Benchmark(Description = "post + wake, poster blocks")]
    public void PostAndBlock()
    {
        _blocked++;
        _done.Reset();
        _reactor.Schedule(s_set, _done);
        if (!_done.Wait(TimeSpan.FromSeconds(5)))
        {
            BenchmarkGuard.Fail("a posted item did not run within 5 s");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        long posts = _posted + _blocked - _postsAtStart;
        long wakes = _reactor.WakeWrites - _wakesAtStart;
        Console.WriteLine($"// reactor: {wakes} eventfd writes for {posts} posts ({(posts == 0 ? 0 : (double)wakes / posts):F3} per post)");
        _reactor.StopAsync().Wait(TimeSpan.FromSeconds(10));
        _done.Dispose();
    }
}
