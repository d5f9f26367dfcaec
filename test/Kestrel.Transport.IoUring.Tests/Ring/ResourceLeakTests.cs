using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;
using static Kestrel.Transport.IoUring.Tests.Infrastructure.RingTestHelpers;

namespace Kestrel.Transport.IoUring.Tests.Ring;

/// <summary>Leaks are failures: rings, eventfds and threads must all go when reactors stop.</summary>
[Collection(SerialCollection.Name)]
public class ResourceLeakTests(ITestOutputHelper output)
{
    private const int Reactors = 50;

    [SkippableFact]
    public async Task StopAsync_FiftyReactorsStartedAndStopped_ReturnFdsAndThreadsToBaseline()
    {
        IoUringRequirement.Ensure();
        ReactorOptions Options() => SmallReactorOptions(receiveBuffers: 8);

        // Warm up once so lazily created runtime state (thread pool workers, timers) is in the baseline.
        await CycleOne(Options());
        Snapshot baseline = await Settled(Snapshot.Take, s => true);
        output.WriteLine($"baseline: {baseline}");

        // The instrument sees a live reactor: one ring fd, one eventfd, one named thread.
        Reactor live = StartReactor(Options());
        Snapshot running = Snapshot.Take();
        await StopBounded(live);
        output.WriteLine($"one reactor running: {running}");
        Assert.Equal(baseline.RingFds + 1, running.RingFds);
        Assert.Equal(baseline.EventFds + 1, running.EventFds);
        Assert.Equal(baseline.RingThreads + 1, running.RingThreads);

        for (int i = 0; i < Reactors; i++)
        {
            await CycleOne(Options());
        }

        // Reactor threads exit just after completing Stopped, and io-wq workers after their ring: wait briefly.
        Snapshot after = await Settled(Snapshot.Take, s => s.RingFds <= baseline.RingFds && s.EventFds <= baseline.EventFds && s.RingThreads <= baseline.RingThreads);
        output.WriteLine($"after {Reactors} reactors: {after}");

        Assert.Equal(baseline.RingFds, after.RingFds);
        Assert.Equal(baseline.EventFds, after.EventFds);
        Assert.Equal(baseline.RingThreads, after.RingThreads);

        // Everything else may move a little with the runtime (thread pool, sockets of parallel
        // tests are excluded by the serial collection), never by one per reactor.
        Assert.InRange(after.Fds, 0, baseline.Fds + 3);
        Assert.InRange(after.Threads, 0, baseline.Threads + 4);
    }

    private static async Task CycleOne(ReactorOptions options)
    {
        Reactor reactor = StartReactor(options);
        try
        {
            // Exercise the ring and the wake channel before stopping.
            Assert.True(await OnReactor(reactor, () => reactor.IsOnReactorThread));
        }
        finally
        {
            await StopBounded(reactor);
        }

        Assert.Equal(0, reactor.InFlight);
    }

    private static async Task<Snapshot> Settled(Func<Snapshot> take, Func<Snapshot, bool> done)
    {
        DateTime deadline = DateTime.UtcNow.AddSeconds(5);
        Snapshot last = take();
        while (!done(last) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
            last = take();
        }

        return last;
    }

    private readonly record struct Snapshot(int Fds, int RingFds, int EventFds, int Threads, int RingThreads)
    {
        public static Snapshot Take()
        {
            int fds = 0, rings = 0, eventFds = 0;
            foreach (string fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
            {
                fds++;
                string? target = TryLinkTarget(fd);
                if (target == "anon_inode:[io_uring]")
                {
                    rings++;
                }
                else if (target == "anon_inode:[eventfd]")
                {
                    eventFds++;
                }
            }

            int threads = 0, ringThreads = 0;
            foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
            {
                threads++;
                string name = TryRead(Path.Combine(task, "comm"));

                // Reactor threads ("io_uring reactor N", truncated to 15 bytes by the kernel) and io_uring's
                // kernel workers (iou-wrk-*, iou-sqp-*), which appear as threads of this process.
                if (name.StartsWith("io_uring", StringComparison.Ordinal) || name.StartsWith("iou-", StringComparison.Ordinal))
                {
                    ringThreads++;
                }
            }

            return new Snapshot(fds, rings, eventFds, threads, ringThreads);
        }

        private static string? TryLinkTarget(string path)
        {
            try
            {
                return new FileInfo(path).LinkTarget;
            }
            catch (IOException)
            {
                return null; // closed while we looked
            }
        }

        private static string TryRead(string path)
        {
            try
            {
                return File.ReadAllText(path).Trim();
            }
            catch (IOException)
            {
                return ""; // the thread exited while we looked
            }
        }
    }
}
