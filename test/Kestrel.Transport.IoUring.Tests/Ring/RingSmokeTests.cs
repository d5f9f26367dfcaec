using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Ring;

public class RingSmokeTests
{
    [SkippableFact]
    public unsafe void Nop_RoundTrip_CompletesWithUserData()
    {
        IoUringRequirement.Ensure();
        using var ring = new IoUringRing(new RingOptions { SqEntries = 8, CqEntries = 16 });
        io_uring_sqe* sqe = ring.GetSqe();
        sqe->opcode = IoUringNative.IORING_OP_NOP;
        sqe->user_data = 0x1234;
        int submitted = ring.SubmitAndWait(1, -1);
        Assert.Equal(1, submitted);
        Span<io_uring_cqe> cqes = stackalloc io_uring_cqe[4];
        int n = ring.CopyCompletions(cqes);
        Assert.Equal(1, n);
        Assert.Equal(0x1234ul, cqes[0].user_data);
        Assert.Equal(0, cqes[0].res);
    }

    [SkippableFact]
    public async Task Reactor_ScheduleFromOtherThread_RunsOnReactorThread()
    {
        IoUringRequirement.Ensure();
        var reactor = new Reactor(new ReactorOptions(), 0);
        reactor.Start();
        var tcs = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        reactor.Schedule(_ => tcs.SetResult(reactor.IsOnReactorThread), null);
        Assert.True(await tcs.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        await reactor.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, reactor.InFlight);
    }
}
