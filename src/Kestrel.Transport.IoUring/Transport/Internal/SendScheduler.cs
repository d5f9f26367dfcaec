using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// The reader scheduler of every output pipe of one reactor: where a connection's send loop goes on once the
/// application flushes. Normally that is the reactor, and the send joins the reactor's next batched submission.
/// When the flush comes from another thread while the reactor is blocked in io_uring_enter with no wake-up on its
/// way, and the thread pool has few work items queued (so no batch of further flushes is coming for the reactor to
/// gather into one submission), handing the send to the reactor would cost an eventfd write and two context switches
/// for one send. The continuation then runs
/// inline on the flushing thread instead, and the connection sends with a non-blocking send(2) there
/// (<see cref="IoUringConnection"/>'s direct send), handing the loop back to the reactor for anything else.
/// </summary>
internal sealed class SendScheduler(Reactor reactor, bool directSend) : PipeScheduler
{
    [ThreadStatic]
    private static bool t_inline;

    /// <summary>
    /// Above this many queued thread-pool work items, more flushes are on their way and one reactor submission
    /// carries them all more cheaply than a send(2) each. Measured on plaintext at 16, 64 and 256 connections
    /// (benchmarks/results/2026-12-04-direct-send.md): 0 sends too rarely to help at 16 connections (20.9 us/request
    /// against 12.8 at 16), no limit costs 1.8x CPU at 256 connections, 16 and 64 are equal within noise.
    /// </summary>
    private const long MaxQueuedWorkItems = 16;

    /// <summary>True on a thread running a send loop continuation inline (inside the application's flush).</summary>
    public static bool IsRunningInline => t_inline;

    public override void Schedule(Action<object?> action, object? state)
    {
        if (directSend && !t_inline && !reactor.IsOnReactorThread && reactor.IsBlockedAndUnwoken
            && System.Threading.ThreadPool.PendingWorkItemCount <= MaxQueuedWorkItems)
        {
            t_inline = true;
            try
            {
                action(state);
            }
            finally
            {
                t_inline = false;
            }

            return;
        }

        reactor.Schedule(action, state);
    }
}
