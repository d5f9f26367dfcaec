using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Ring;
using Microsoft.Win32.SafeHandles;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Part of a file that goes to the socket at one place in the output stream, without passing
/// through user space. <see cref="Counted"/> grows as the application advances Kestrel's response
/// writer over it (so Kestrel's Content-Length accounting sees every byte); the send loop splices up to
/// <see cref="Counted"/>. It owns the file handle and the pipe until the send loop releases it, which it
/// does only when no splice on them is in flight.
/// </summary>
internal sealed class FileRegion(SafeFileHandle file, long fileOffset, long length, SplicePipe pipe, long pipePosition)
{
    public SafeFileHandle File { get; } = file;

    public int FileFd { get; } = (int)file.DangerousGetHandle();

    public long FileOffset { get; } = fileOffset;

    /// <summary>The most bytes the application announced; it may count fewer (the response ended early).</summary>
    public long Length { get; } = length;

    public SplicePipe Pipe { get; } = pipe;

    /// <summary>Bytes written to the output pipe before this region: the region goes out right after them.</summary>
    public long PipePosition { get; } = pipePosition;

    // Under the writer's lock.
    public long Counted;
    public long Sent;
    public bool Ended;
    public FileRegion? Next;
    public TaskCompletionSource<FlushResult>? Waiter;

    // Reactor thread only: bytes moved from the file into the pipe (Spliced - Sent are in the pipe).
    public long Spliced;
}

/// <summary>What the send loop does next with the region at the head of the queue.</summary>
internal enum RegionStep
{
    /// <summary>Bytes are counted and not spliced yet, or bytes are in the pipe: splice.</summary>
    Splice,

    /// <summary>Everything counted is sent, more may be counted: wait for a wake.</summary>
    Wait,

    /// <summary>Ended and fully sent: it was removed from the queue; release it.</summary>
    Finished,
}

/// <summary>
/// The application's end of a connection's output (<c>Transport.Output</c>): forwards to the output
/// pipe's writer and counts the bytes advanced into it, so that a file region can be placed at an exact
/// position of the output stream. Between <see cref="TryBeginRegion"/> and <see cref="EndRegion"/> the
/// bytes advanced are not bytes at all: GetMemory hands out a scratch buffer nobody reads, and Advance
/// counts them into the region, which the send loop fills from the file with IORING_OP_SPLICE. Kestrel's
/// writer passes GetMemory/Advance straight through to here for a started HTTP/1.1 response with a
/// Content-Length, so its accounting stays exact while no byte is copied.
/// </summary>
internal sealed class IoUringOutputWriter(PipeWriter inner, IoUringConnection connection) : PipeWriter
{
    /// <summary>A flush in a region returns once no more than this many counted bytes are unsent.</summary>
    public const int Window = 256 * 1024;

    public const int ScratchSize = 64 * 1024;

    // Never read, and written by nobody: what a region's GetMemory returns. Shared by all connections.
    private static byte[]? s_scratch;

    private readonly Lock _lock = new();
    private long _written;          // application thread: bytes advanced into the pipe
    private FileRegion? _open;      // application thread writes (under the lock): the region Advance counts into
    private FileRegion? _head;      // under the lock; read without it by the send loop as a fast "no regions" check
    private FileRegion? _tail;
    private bool _closed;           // the send side ended: no new regions
    private volatile bool _poisoned;

    /// <summary>Set when the bytes Kestrel counted and the bytes that reached a region disagreed: nothing more may be sent.</summary>
    public bool IsPoisoned => _poisoned;

    /// <summary>The oldest region not yet fully sent, or null. Send loop.</summary>
    public FileRegion? Head => Volatile.Read(ref _head);

    public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

    public override long UnflushedBytes => inner.UnflushedBytes;

    public override Memory<byte> GetMemory(int sizeHint = 0)
        => _open is null ? inner.GetMemory(sizeHint) : Scratch(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0)
        => _open is null ? inner.GetSpan(sizeHint) : Scratch(sizeHint).Span;

    public override void Advance(int bytes)
    {
        FileRegion? open = _open;
        if (open is null)
        {
            inner.Advance(bytes);
            _written += bytes;
            return;
        }

        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_lock)
        {
            open.Counted += bytes;
        }
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        ValueTask<FlushResult> flush = inner.FlushAsync(cancellationToken);
        if (Volatile.Read(ref _head) is null)
        {
            return flush;
        }

        TaskCompletionSource<FlushResult>? waiter = null;
        lock (_lock)
        {
            FileRegion? tail = _tail;
            if (tail is not null && !_closed && tail.Counted - tail.Sent > Window)
            {
                waiter = tail.Waiter ??= new TaskCompletionSource<FlushResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        connection.WakeSendLoop();
        return waiter is null ? flush : WaitAsync(flush, waiter, cancellationToken);
    }

    private static async ValueTask<FlushResult> WaitAsync(ValueTask<FlushResult> flush, TaskCompletionSource<FlushResult> waiter, CancellationToken cancellationToken)
    {
        FlushResult result = await flush.ConfigureAwait(false);
        if (result.IsCompleted || result.IsCanceled)
        {
            return result;
        }

        return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public override void CancelPendingFlush()
    {
        inner.CancelPendingFlush();
        TaskCompletionSource<FlushResult>? waiter;
        lock (_lock)
        {
            waiter = _tail?.Waiter;
            if (_tail is not null)
            {
                _tail.Waiter = null;
            }
        }

        waiter?.TrySetResult(new FlushResult(isCanceled: true, isCompleted: false));
    }

    public override void Complete(Exception? exception = null)
    {
        if (_open is { } open)
        {
            EndRegion(open);
        }

        inner.Complete(exception);
    }

    /// <summary>
    /// Starts counting Advance into a new region placed after every byte advanced so far. Null when the
    /// send side has ended, the writer is poisoned, or a region is already open. Application thread.
    /// </summary>
    public FileRegion? TryBeginRegion(SafeFileHandle file, long offset, long length, SplicePipe pipe)
    {
        lock (_lock)
        {
            if (_closed || _poisoned || _open is not null)
            {
                return null;
            }

            var region = new FileRegion(file, offset, length, pipe, _written);
            if (_tail is null)
            {
                Volatile.Write(ref _head, region);
            }
            else
            {
                _tail.Next = region;
            }

            _tail = region;
            _open = region;
            return region;
        }
    }

    /// <summary>No more bytes go to <paramref name="region"/>; Advance writes to the pipe again. Application thread.</summary>
    public void EndRegion(FileRegion region)
    {
        lock (_lock)
        {
            region.Ended = true;
            if (ReferenceEquals(_open, region))
            {
                _open = null;
            }
        }

        connection.WakeSendLoop();
    }

    /// <summary>Nothing more may reach the socket (the region's count and Kestrel's disagreed). Any thread.</summary>
    public void Poison() => _poisoned = true;

    /// <summary>Send loop: what to do with the head region (removing it when finished).</summary>
    public RegionStep Step(FileRegion region)
    {
        lock (_lock)
        {
            if (region.Spliced < region.Counted || region.Spliced > region.Sent)
            {
                return RegionStep.Splice;
            }

            if (!region.Ended)
            {
                return RegionStep.Wait;
            }

            _head = region.Next;
            if (_head is null)
            {
                _tail = null;
            }

            CompleteWaiter(region, new FlushResult(isCanceled: false, isCompleted: false));
            return RegionStep.Finished;
        }
    }

    /// <summary>Send loop: true when <see cref="Step"/> would not answer <see cref="RegionStep.Wait"/>.</summary>
    public bool HasWork(FileRegion region)
    {
        lock (_lock)
        {
            return region.Spliced < region.Counted || region.Spliced > region.Sent || region.Ended;
        }
    }

    /// <summary>Send loop: the bytes counted and not yet moved into the pipe.</summary>
    public long Unspliced(FileRegion region)
    {
        lock (_lock)
        {
            return region.Counted - region.Spliced;
        }
    }

    /// <summary>Send loop: <paramref name="bytes"/> of the region reached the socket.</summary>
    public void OnSent(FileRegion region, int bytes)
    {
        lock (_lock)
        {
            region.Sent += bytes;
            if (region.Counted - region.Sent <= Window)
            {
                CompleteWaiter(region, new FlushResult(isCanceled: false, isCompleted: false));
            }
        }
    }

    /// <summary>Send loop, when the send side ends: no new regions; returns those queued (none has a splice in flight).</summary>
    public List<FileRegion> Close()
    {
        var regions = new List<FileRegion>();
        lock (_lock)
        {
            _closed = true;
            for (FileRegion? region = _head; region is not null; region = region.Next)
            {
                regions.Add(region);
                CompleteWaiter(region, new FlushResult(isCanceled: false, isCompleted: true));
            }

            _head = null;
            _tail = null;
        }

        return regions;
    }

    private static void CompleteWaiter(FileRegion region, FlushResult result)
    {
        TaskCompletionSource<FlushResult>? waiter = region.Waiter;
        region.Waiter = null;
        waiter?.TrySetResult(result);
    }

    private static Memory<byte> Scratch(int sizeHint)
    {
        if (sizeHint > ScratchSize)
        {
            return new byte[sizeHint];
        }

        return s_scratch ??= GC.AllocateUninitializedArray<byte>(ScratchSize);
    }
}
