using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// One accepted socket on one reactor. Receives through a multishot recv on the reactor's provided
/// buffer ring (copied into the input pipe, the buffer recycled at once; or, as the options choose, a
/// single-shot recv on that ring, or a single-shot recv straight into pinned input pipe memory), sends what the application
/// flushed with one (vectored) send at a time. Output memory is pinned and left unconsumed in the pipe
/// until the send's completion arrives; the fd is closed and the slot released only after the final
/// completion of every operation. Everything but the public surface runs on the reactor thread.
/// </summary>
internal sealed unsafe partial class IoUringConnection : ConnectionContext, IRingOwner
{
    private const byte KindRecv = 1;
    private const byte KindSend = 2;
    private const byte KindSpliceIn = 3;   // file -> pipe, linked to the KindSpliceOut after it
    private const byte KindSpliceOut = 4;  // pipe -> socket
    private const int MaxIovecs = 64;
    private const int MaxDirectSends = 4;  // per flush: a writer that keeps flushing meets the reactor's batching again
    private const int PipeReceiveSizeHint = 2048; // ReceiveMode.IntoPipe: the least room a receive is given
    private static readonly nuint GatherBlockSize = (nuint)(sizeof(msghdr) + MaxIovecs * sizeof(iovec));
    private static readonly bool s_finOnError =
        AppContext.TryGetSwitch("Microsoft.AspNetCore.Server.Kestrel.FinOnError", out bool finOnError) && finOnError;

    private readonly int _fd;
    private readonly Reactor _reactor;
    private readonly ReactorGroup _group;
    private readonly ILogger _logger;
    private readonly Pipe _input;   // we write, the application reads
    private readonly Pipe _output;  // the application writes, we read
    private readonly IDuplexPipe _originalTransport;
    private readonly IoUringOutputWriter _writer;   // the application's Transport.Output
    private readonly MemoryPool<byte> _pool;
    private readonly ReactorStats _stats;
    private readonly CancellationTokenSource _connectionClosedTokenSource = new();
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _connectionClosedFired = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Action _onFlushCompleted;
    private readonly Action _onReadCompleted;
    private uint _slot;

    // Receive side
    private readonly ReceiveMode _receiveMode;
    private MemoryHandle _recvPin;          // IntoPipe: the pipe memory the in-flight receive writes into
    private bool _inputCompletePending;     // IntoPipe: the input ended while a receive was in flight
    private Exception? _inputCompleteError;
    private bool _recvArmed;
    private bool _recvDone;
    private bool _flushPending;
    private bool _waitingForBuffers;
    private ValueTask<FlushResult> _flushTask;

    // Send side
    private bool _readPending;
    private bool _sendInFlight;
    private bool _sendDone;
    private ValueTask<ReadResult> _readTask;
    private ReadOnlySequence<byte> _sendBuffer;
    private bool _sendBufferIsLast;
    private long _sendOffset;
    private MemoryHandle _singlePin;        // the one pinned segment of a single-segment send
    private MemoryHandle[]? _pins;          // created on the first multi-segment send
    private msghdr* _msg;                   // followed in the same allocation by MaxIovecs iovecs
    private iovec* _iovecs;
    private int _pinCount;
    private long _pipeConsumed;             // output pipe bytes sent and consumed (positions file regions)
    private bool _regionWake;               // the pending read was cancelled to look at a region, not to abort
    private ReadResult _handOffResult;      // SendDirect -> OnHandOff (published by the reactor's queue)
    private bool _handOffAttempted;
    private int _handOffSendResult;
    private Exception? _handOffError;
    private FileRegion? _spliceRegion;      // the region whose splices are in flight
    private int _spliceOps;                 // splices in flight (both count as the one send in flight)
    private int _spliceInResult;
    private int _spliceOutResult;

    // Closing
    private const int OutputSendEnded = 1;              // _outputHandoff: EndSend ran first
    private const int OutputConnectionClosedFired = 2;  // _outputHandoff: FireConnectionClosed ran first
    private int _outputHandoff;             // which of the two ran first; the second completes the output reader
    private Exception? _outputError;
    private Exception? _shutdownReason;
    private bool _shutdownDone;
    private bool _isClosed;
    private Task? _disposeTask;

    public IoUringConnection(int fd, Reactor reactor, ReactorGroup group, MemoryPool<byte> pool, ReactorStats stats, EndPoint? localEndPoint, EndPoint? remoteEndPoint)
    {
        _stats = stats;
        _fd = fd;
        _reactor = reactor;
        _group = group;
        _logger = group.Logger;
        _pool = pool;
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        ConnectionClosed = _connectionClosedTokenSource.Token;

        (PipeOptions inputOptions, PipeOptions outputOptions) = group.PipeOptionsFor(reactor.Id);
        _input = new Pipe(inputOptions);
        _output = new Pipe(outputOptions);
        _writer = new IoUringOutputWriter(_output.Writer, this);
        _originalTransport = new DuplexPipe(_input.Reader, _writer);
        Transport = _originalTransport;

        _receiveMode = group.ReceiveMode;
        _onFlushCompleted = OnFlushCompletedGuarded;
        _onReadCompleted = OnReadCompletedGuarded;
    }

    // ---------------- Start ----------------

    /// <summary>Registers with the reactor and starts both directions. Reactor thread.</summary>
    public void Start()
    {
        _slot = _reactor.Register(this);
        Interlocked.Increment(ref _stats.ActiveConnections);
        ArmRecv();
        StartRead();
    }

    public void OnCompletion(byte kind, int result, uint flags)
    {
        switch (kind)
        {
            case KindRecv:
                OnRecvCompleted(result, flags);
                break;
            case KindSend:
                OnSendCompleted(result);
                break;
            case KindSpliceIn:
                _spliceInResult = result;
                if (--_spliceOps == 0)
                {
                    OnSpliceCompleted();
                }

                break;
            case KindSpliceOut:
                _spliceOutResult = result;
                if (--_spliceOps == 0)
                {
                    OnSpliceCompleted();
                }

                break;
        }

        MaybeClose();
    }

    // ---------------- Receive ----------------

    private void ArmRecv()
    {
        if (_recvArmed || _recvDone || _shutdownDone || _flushPending || _waitingForBuffers || _reactor.IsStopping)
        {
            return;
        }

        io_uring_sqe* sqe;
        if (_receiveMode == ReceiveMode.IntoPipe)
        {
            // The writer's head block: between GetMemory and the next Advance/FlushAsync/Complete the
            // pipe neither returns it to the pool (writing is active) nor hands it to the reader, and we
            // call none of them before this receive's final completion. Pinned until then.
            Memory<byte> memory = _input.Writer.GetMemory(PipeReceiveSizeHint);
            _recvPin = memory.Pin();
            sqe = _reactor.GetSqe(_slot, KindRecv);
            sqe->opcode = IoUringNative.IORING_OP_RECV;
            sqe->fd = _fd;
            sqe->addr = (ulong)_recvPin.Pointer;
            sqe->len = (uint)memory.Length;
        }
        else
        {
            sqe = _reactor.GetSqe(_slot, KindRecv);
            sqe->opcode = IoUringNative.IORING_OP_RECV;
            sqe->fd = _fd;
            sqe->ioprio = _receiveMode == ReceiveMode.MultishotProvided ? IoUringNative.IORING_RECV_MULTISHOT : (ushort)0;
            sqe->flags = IoUringNative.IOSQE_BUFFER_SELECT;
            sqe->buf_group = _reactor.Buffers.GroupId;
        }

        _recvArmed = true;
        _stats.ReceiveSubmissions++;
    }

    private void OnRecvCompleted(int result, uint flags)
    {
        if ((flags & IoUringNative.IORING_CQE_F_MORE) == 0)
        {
            _recvArmed = false;
        }

        if (_receiveMode == ReceiveMode.IntoPipe)
        {
            OnPipeRecvCompleted(result);
        }
        else if (result > 0)
        {
            ProvidedBufferRing buffers = _reactor.Buffers;
            ushort bid = (ushort)(flags >> IoUringNative.IORING_CQE_BUFFER_SHIFT);
            buffers.OnConsumed();
            _stats.ProvidedBufferReceives++;
            _stats.BytesReceived += result;
            try
            {
                if (!_recvDone)
                {
                    // Copy out of the kernel's buffer: the application never sees ring memory, and the
                    // buffer goes back to the kernel at the end of this loop turn.
                    HotPath.CopyInto(_input.Writer, buffers.GetData(bid, result));
                }
            }
            finally
            {
                buffers.Recycle(bid);
            }

            if (!_recvDone)
            {
                FlushInput();
            }
        }
        else
        {
            OnRecvEnded(result);
        }

        // The multishot ended without an error that ends the connection: arm it again.
        ArmRecv();
        if (!_recvArmed && !_recvDone && (_shutdownDone || _reactor.IsStopping))
        {
            // A cancelled receive may end with data instead of ECANCELED; nothing re-arms after shutdown.
            EndReceive(null);
        }
    }

    /// <summary>A receive that brought no bytes: the peer's FIN (0) or an error (negative errno).</summary>
    private void OnRecvEnded(int result)
    {
        if (result == 0)
        {
            if (!_shutdownDone)
            {
                IoUringLog.ConnectionReadFin(_logger, ConnectionId);
            }

            EndReceive(null);
        }
        else
        {
            OnRecvError(-result);
        }
    }

    /// <summary>The final completion of a single-shot receive into the input pipe's memory.</summary>
    private void OnPipeRecvCompleted(int result)
    {
        // The kernel is done with the pipe memory: only from here may the pipe return or reuse it.
        _recvPin.Dispose();
        _recvPin = default;
        if (result > 0)
        {
            _stats.PipeReceives++;
            _stats.BytesReceived += result;
            if (!_recvDone)
            {
                _input.Writer.Advance(result);
                FlushInput();
            }
        }
        else
        {
            OnRecvEnded(result);
        }

        if (_inputCompletePending)
        {
            _inputCompletePending = false;
            _input.Writer.Complete(_inputCompleteError);
            _inputCompleteError = null;
        }
    }

    private void OnRecvError(int errno)
    {
        switch (errno)
        {
            case Libc.ENOBUFS:
                // Every provided buffer is in use. Re-arm once recycled buffers are back in the ring.
                _reactor.Buffers.Exhaustions++;
                _stats.BufferExhaustions++;
                if (!_recvDone && !_waitingForBuffers)
                {
                    _waitingForBuffers = true;
                    _reactor.WhenBuffersAvailable(static state => ((IoUringConnection)state!).Guard(static connection =>
                    {
                        connection._waitingForBuffers = false;
                        connection.ArmRecv();
                        connection.MaybeClose();
                    }), this);
                }

                return;
            case Libc.ECANCELED:
                // We cancelled it: backpressure (re-armed on resume), the input was completed, or shutdown.
                if (_shutdownDone || _reactor.IsStopping)
                {
                    EndReceive(null);
                }

                return;
            case Libc.ECONNRESET or Libc.EPIPE or Libc.ESHUTDOWN or Libc.ECONNABORTED:
                if (!_shutdownDone)
                {
                    IoUringLog.ConnectionReset(_logger, ConnectionId);
                }

                EndReceive(new ConnectionResetException(ErrnoText.Describe(errno), new IOException(ErrnoText.Describe(errno))));
                return;
            default:
                var error = new IOException($"Receive failed: {ErrnoText.Describe(errno)}");
                if (!_shutdownDone)
                {
                    IoUringLog.ConnectionError(_logger, ConnectionId, error);
                }

                EndReceive(error);
                return;
        }
    }

    private void FlushInput()
    {
        if (_flushPending || _recvDone)
        {
            return;
        }

#pragma warning disable CA2012 // Kept in a field and consumed exactly once, by its continuation or synchronously.
        ValueTask<FlushResult> flush = _input.Writer.FlushAsync();
#pragma warning restore CA2012
        if (flush.IsCompleted)
        {
            OnFlushResult(flush.GetAwaiter().GetResult());
            return;
        }

        // Over MaxReadBufferSize: stop receiving until the application has read half of it.
        _flushPending = true;
        _flushTask = flush;
        IoUringLog.ConnectionPause(_logger, ConnectionId);
        if (_recvArmed)
        {
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindRecv));
        }

        flush.GetAwaiter().UnsafeOnCompleted(_onFlushCompleted);
    }

    private void OnFlushCompletedGuarded() => Guard(static c => c.OnFlushCompleted());

    /// <summary>Runs on the input pipe's writer scheduler: the reactor.</summary>
    private void OnFlushCompleted()
    {
        _flushPending = false;
        FlushResult result;
        try
        {
#pragma warning disable CA2012 // This is the flush's continuation: the ValueTask has completed.
            result = _flushTask.GetAwaiter().GetResult();
#pragma warning restore CA2012
        }
        catch (Exception e)
        {
            EndReceive(e);
            MaybeClose();
            return;
        }

        _flushTask = default;
        if (_recvDone || _isClosed)
        {
            return;
        }

        IoUringLog.ConnectionResume(_logger, ConnectionId);
        OnFlushResult(result);
        if (!_recvDone && _input.Writer.UnflushedBytes > 0)
        {
            // Data that arrived while paused (completions already queued when we cancelled).
            FlushInput();
        }

        ArmRecv();
        MaybeClose();
    }

    private void OnFlushResult(FlushResult result)
    {
        if (result.IsCompleted || result.IsCanceled)
        {
            // The application completed its input, or the send side ended and cancelled this flush.
            EndReceive(null);
        }
    }

    private void EndReceive(Exception? error)
    {
        if (_recvDone)
        {
            return;
        }

        _recvDone = true;
        if (_recvArmed)
        {
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindRecv));
        }

        if (_recvArmed && _receiveMode == ReceiveMode.IntoPipe)
        {
            // The kernel may still write into the pipe's memory, and completing the writer could return
            // it to the pool: complete at the receive's final completion instead.
            _inputCompletePending = true;
            _inputCompleteError = _shutdownReason ?? error;
        }
        else
        {
            _input.Writer.Complete(_shutdownReason ?? error);
        }

        // ConnectionClosed fires on the thread pool, never inline on the reactor.
        System.Threading.ThreadPool.UnsafeQueueUserWorkItem(static state => ((IoUringConnection)state!).FireConnectionClosed(), this, preferLocal: false);
    }

    private void FireConnectionClosed()
    {
        try
        {
            _connectionClosedTokenSource.Cancel(throwOnFirstException: false);
        }
        catch (AggregateException e)
        {
            IoUringLog.ConnectionError(_logger, ConnectionId, e);
        }
        finally
        {
            _connectionClosedFired.TrySetResult();
        }

        if (Interlocked.Exchange(ref _outputHandoff, OutputConnectionClosedFired) == OutputSendEnded)
        {
            _reactor.Schedule(static state => ((IoUringConnection)state!).CompleteOutput(), this);
        }
    }

    /// <summary>
    /// Completes the output pipe's reader: from here the application's writes complete at once. Runs
    /// only once the send side ended and ConnectionClosed's callbacks ran, in either order. Kestrel
    /// aborts its output and the request from ConnectionClosed, under a lock its response writes take
    /// too; completing the reader first would let a write loop spin on completed writes, contending
    /// for that lock, before Kestrel knows the connection is gone. Reactor thread, or the thread pool
    /// once the reactor stopped.
    /// </summary>
    private void CompleteOutput()
    {
        _output.Reader.Complete(_outputError);
        _outputError = null;
    }

    // ---------------- Send ----------------

    private void StartRead()
    {
        while (!_sendDone && !_readPending && !_sendInFlight)
        {
#pragma warning disable CA2012 // Kept in a field and consumed exactly once, by its continuation or synchronously.
            ValueTask<ReadResult> read = _output.Reader.ReadAsync();
#pragma warning restore CA2012
            if (!read.IsCompleted)
            {
                _readPending = true;
                _readTask = read;
                read.GetAwaiter().UnsafeOnCompleted(_onReadCompleted);
                if (_writer.Head is { } region && region.PipePosition == _pipeConsumed && _writer.HasWork(region))
                {
                    // A region is due and no output will arrive to wake this read (its wake came while
                    // a send was in flight): complete the read now.
                    _regionWake = true;
                    _output.Reader.CancelPendingRead();
                }

                return;
            }

            ReadResult result;
            try
            {
                result = read.GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                EndSend(e);
                return;
            }

            if (!HandleReadResult(result))
            {
                return;
            }
        }
    }

    private void OnReadCompletedGuarded()
    {
        if (SendScheduler.IsRunningInline)
        {
            SendDirect();
            return;
        }

        Guard(static c => c.OnReadCompleted());
    }

    /// <summary>
    /// The send loop's read completed inline on the thread that flushed (see <see cref="SendScheduler"/>).
    /// Sends what the pipe holds with non-blocking send(2) calls until a read would wait, then leaves a read
    /// pending as <see cref="StartRead"/> does. Anything else (a short send, a full socket, an error, a file
    /// region, the end of the output, a cancelled read, an exception) goes back to the reactor through
    /// <see cref="HandOff"/>. <c>_readPending</c> stays true all along, so the reactor touches none of the send
    /// state meanwhile: its shutdown only cancels the pending read, and the fd stays open, because only the send
    /// loop ends the send side (EndSend) and the fd is closed only after that.
    /// </summary>
    private void SendDirect()
    {
        try
        {
#pragma warning disable CA2012 // This is the read's continuation: the ValueTask has completed.
            ReadResult result = _readTask.GetAwaiter().GetResult();
#pragma warning restore CA2012
            _readTask = default;
            for (int round = 0; ; round++)
            {
                ReadOnlySequence<byte> buffer = result.Buffer;
                if (round == MaxDirectSends || result.IsCanceled || result.IsCompleted || buffer.IsEmpty || !buffer.IsSingleSegment
                    || _writer.Head is not null || _writer.IsPoisoned || Volatile.Read(ref _shutdownDone) || _reactor.IsStopping)
                {
                    HandOff(result, attempted: false, sendResult: 0, error: null);
                    return;
                }

                // Synchronous: the kernel has copied what it took when the call returns, and the memory goes
                // back to the pool only with the AdvanceTo below.
                int length = (int)buffer.Length;
                int sent = NativeSocket.SendNonBlocking(_fd, buffer.FirstSpan);
                if (sent != length)
                {
                    HandOff(result, attempted: true, sendResult: sent, error: null);
                    return;
                }

                Interlocked.Increment(ref _stats.DirectSends);
                Interlocked.Add(ref _stats.DirectBytesSent, length);
                _pipeConsumed += length; // before AdvanceTo, as in OnSendCompleted
                _output.Reader.AdvanceTo(buffer.End);

#pragma warning disable CA2012 // Kept in a field and consumed exactly once, by its continuation or synchronously.
                ValueTask<ReadResult> read = _output.Reader.ReadAsync();
#pragma warning restore CA2012
                if (read.IsCompleted)
                {
                    result = read.GetAwaiter().GetResult();
                    continue;
                }

                // From here on the continuation may run at any moment, on the reactor or inline on another
                // flushing thread: nothing of the send state is touched after this.
                _readTask = read;
                read.GetAwaiter().UnsafeOnCompleted(_onReadCompleted);
                return;
            }
        }
        catch (Exception e)
        {
            _readTask = default;
            HandOff(default, attempted: false, sendResult: 0, error: e);
        }
    }

    /// <summary>Gives the send loop back to the reactor after <see cref="SendDirect"/>. Still with <c>_readPending</c> set.</summary>
    private void HandOff(ReadResult result, bool attempted, int sendResult, Exception? error)
    {
        _handOffResult = result;
        _handOffAttempted = attempted;
        _handOffSendResult = sendResult;
        _handOffError = error;
        _reactor.Schedule(static state => ((IoUringConnection)state!).Guard(static c => c.OnHandOff()), this);
    }

    /// <summary>Reactor thread (or the thread pool once the reactor stopped): the send loop is ours again.</summary>
    private void OnHandOff()
    {
        _readPending = false;
        ReadResult result = _handOffResult;
        Exception? error = _handOffError;
        _handOffResult = default;
        _handOffError = null;
        if (error is not null)
        {
            EndSend(error);
        }
        else if (!_handOffAttempted)
        {
            // Nothing was sent: exactly as if this read had completed on the reactor.
            if (HandleReadResult(result))
            {
                StartRead();
            }
        }
        else if (_shutdownDone || !_reactor.IsOnReactorThread || _reactor.IsStopping)
        {
            // Aborted meanwhile: unsent output is dropped.
            _output.Reader.AdvanceTo(result.Buffer.End);
            EndSend(null);
        }
        else
        {
            // send(2) took part or none of the buffer, or failed: go on as if an io_uring send of the whole
            // buffer had completed with its result (the rest is sent through the ring, an error ends the send side).
            _sendBuffer = result.Buffer;
            _sendBufferIsLast = false;
            _sendOffset = 0;
            _sendInFlight = true;
            OnSendCompleted(_handOffSendResult);
        }

        MaybeClose();
    }

    /// <summary>Runs on the output pipe's reader scheduler: the reactor.</summary>
    private void OnReadCompleted()
    {
        _readPending = false;
        ReadResult result;
        try
        {
#pragma warning disable CA2012 // This is the read's continuation: the ValueTask has completed.
            result = _readTask.GetAwaiter().GetResult();
#pragma warning restore CA2012
        }
        catch (Exception e)
        {
            _readTask = default;
            EndSend(e);
            MaybeClose();
            return;
        }

        _readTask = default;
        if (HandleReadResult(result))
        {
            StartRead();
        }

        MaybeClose();
    }

    /// <summary>Returns true when the caller should read again at once.</summary>
    private bool HandleReadResult(ReadResult result)
    {
        if (_sendDone)
        {
            return false;
        }

        bool woken = _regionWake;
        _regionWake = false;
        ReadOnlySequence<byte> buffer = result.Buffer;
        if ((result.IsCanceled && !woken) || _shutdownDone || !_reactor.IsOnReactorThread || _reactor.IsStopping || _writer.IsPoisoned)
        {
            // Aborted: unsent output is dropped.
            _output.Reader.AdvanceTo(buffer.End);
            EndSend(null);
            return false;
        }

        bool isLast = result.IsCompleted;
        for (FileRegion? region = _writer.Head; region is not null; region = _writer.Head)
        {
            long before = region.PipePosition - _pipeConsumed;
            if (before > 0)
            {
                // Output written before the region goes first, and only that.
                if (before < buffer.Length)
                {
                    buffer = buffer.Slice(0, before);
                    isLast = false;
                }

                break;
            }

            switch (_writer.Step(region))
            {
                case RegionStep.Splice:
                    // Nothing consumed or examined: the next read returns this output again.
                    _output.Reader.AdvanceTo(buffer.Start);
                    IssueSplice(region);
                    return false;
                case RegionStep.Wait:
                    // Everything counted so far is sent; the writer wakes this read when more is counted.
                    _output.Reader.AdvanceTo(buffer.Start, buffer.End);
                    if (result.IsCompleted)
                    {
                        // Unreachable (completing the writer ends its region); never spin on a completed pipe.
                        EndSend(null);
                        return false;
                    }

                    return true;
                default:
                    ReleaseRegion(region);
                    continue;
            }
        }

        if (!buffer.IsEmpty)
        {
            _sendBuffer = buffer;
            _sendBufferIsLast = isLast;
            _sendOffset = 0;
            IssueSend();
            return false;
        }

        _output.Reader.AdvanceTo(buffer.End);
        if (result.IsCompleted)
        {
            EndSend(null);
            return false;
        }

        return true;
    }

    private void IssueSend()
    {
        UnpinAll();
        ReadOnlySequence<byte> remaining = _sendBuffer.Slice(_sendOffset);
        io_uring_sqe* sqe;
        if (remaining.IsSingleSegment)
        {
            // The common case (one flush of a small response) needs no iovec and no msghdr.
            ReadOnlyMemory<byte> memory = remaining.First;
            _singlePin = memory.Pin();
            _pinCount = -1;
            sqe = _reactor.GetSqe(_slot, KindSend);
            sqe->opcode = IoUringNative.IORING_OP_SEND;
            sqe->fd = _fd;
            sqe->msg_flags = Libc.MSG_NOSIGNAL;
            sqe->addr = (ulong)_singlePin.Pointer;
            sqe->len = (uint)memory.Length;
            _sendInFlight = true;
            return;
        }

        if (_msg is null)
        {
            // One native block per connection for the gathered send: a msghdr and its iovec array,
            // unmovable, freed only when the connection closes (after its last send completed).
            _msg = (msghdr*)NativeBuffers.Allocate(GatherBlockSize, zero: true);
            _iovecs = (iovec*)(_msg + 1);
            _pins = new MemoryHandle[MaxIovecs];
        }

        int count = HotPath.Gather(remaining, _pins!, _iovecs, MaxIovecs);

        _pinCount = count;
        _msg->msg_iov = _iovecs;
        _msg->msg_iovlen = (nuint)count;
        sqe = _reactor.GetSqe(_slot, KindSend);
        sqe->opcode = IoUringNative.IORING_OP_SENDMSG;
        sqe->fd = _fd;
        sqe->msg_flags = Libc.MSG_NOSIGNAL;
        sqe->addr = (ulong)_msg;
        sqe->len = 1;
        _sendInFlight = true;
    }

    private void OnSendCompleted(int result)
    {
        _sendInFlight = false;
        if (result < 0)
        {
            int errno = -result;
            UnpinAll();
            _output.Reader.AdvanceTo(_sendBuffer.End);
            _sendBuffer = default;
            switch (errno)
            {
                case Libc.ECANCELED:
                    EndSend(null);
                    break;
                case Libc.EPIPE or Libc.ECONNRESET or Libc.ESHUTDOWN or Libc.ECONNABORTED or Libc.ENOTCONN:
                    if (!_shutdownDone)
                    {
                        IoUringLog.ConnectionReset(_logger, ConnectionId);
                        _shutdownReason ??= new ConnectionResetException(ErrnoText.Describe(errno), new IOException(ErrnoText.Describe(errno)));
                    }

                    EndSend(null);
                    break;
                default:
                    var error = new IOException($"Send failed: {ErrnoText.Describe(errno)}");
                    if (!_shutdownDone)
                    {
                        IoUringLog.ConnectionError(_logger, ConnectionId, error);
                        _shutdownReason ??= error;
                    }

                    EndSend(error);
                    break;
            }

            return;
        }

        _sendOffset += result;
        _stats.BytesSent += result;
        if (!_shutdownDone && _sendOffset < _sendBuffer.Length)
        {
            // Short send, or more segments than one send carries: continue from where the kernel stopped.
            IssueSend();
            return;
        }

        // The kernel is done with these bytes: only now may their memory go back to the pool.
        UnpinAll();
        _pipeConsumed += _sendBuffer.Length; // before AdvanceTo: it may return the segments to the pool
        _output.Reader.AdvanceTo(_sendBuffer.End);
        _sendBuffer = default;
        if (_shutdownDone || _sendBufferIsLast)
        {
            EndSend(null);
            return;
        }

        StartRead();
    }

    // ---------------- File regions (zero-copy) ----------------

    /// <summary>
    /// Splices the region's next bytes: what the pipe still holds to the socket, or else the next
    /// counted chunk of the file into the pipe linked with the pipe to the socket. Both ends run on
    /// io-wq (splice always does); the socket is blocking, so the second waits for socket space there.
    /// SPLICE_F_NONBLOCK keeps either from waiting on the pipe: if the two SQEs ever end up in separate
    /// submissions (SQ full between them) and so run unlinked, the early pipe read fails with EAGAIN
    /// and is simply issued again.
    /// </summary>
    private void IssueSplice(FileRegion region)
    {
        // These SQEs carry only fds and offsets, no user memory; the file and pipe fds stay open until
        // both completions arrived (ReleaseRegion runs only when no splice is in flight).
        _spliceRegion = region;
        _spliceInResult = 0;
        _spliceOutResult = 0;
        long inPipe = region.Spliced - Volatile.Read(ref region.Sent);
        io_uring_sqe* sqe;
        if (inPipe == 0)
        {
            int chunk = (int)Math.Min(region.Pipe.Capacity, _writer.Unspliced(region));
            sqe = _reactor.GetSqe(_slot, KindSpliceIn);
            sqe->opcode = IoUringNative.IORING_OP_SPLICE;
            sqe->flags = IoUringNative.IOSQE_IO_LINK;
            sqe->splice_fd_in = region.FileFd;
            sqe->splice_off_in = (ulong)(region.FileOffset + region.Spliced);
            sqe->fd = region.Pipe.WriteFd;
            sqe->off = ulong.MaxValue; // -1: a pipe has no offset
            sqe->len = (uint)chunk;
            sqe->splice_flags = Libc.SPLICE_F_NONBLOCK;
            _spliceOps++;
            inPipe = chunk;
        }
        else
        {
            _spliceInResult = int.MinValue; // not issued
        }

        sqe = _reactor.GetSqe(_slot, KindSpliceOut);
        sqe->opcode = IoUringNative.IORING_OP_SPLICE;
        sqe->splice_fd_in = region.Pipe.ReadFd;
        sqe->splice_off_in = ulong.MaxValue;
        sqe->fd = _fd;
        sqe->off = ulong.MaxValue;
        sqe->len = (uint)inPipe;
        sqe->splice_flags = Libc.SPLICE_F_NONBLOCK;
        _spliceOps++;
        _sendInFlight = true;
    }

    /// <summary>Both splices of the last <see cref="IssueSplice"/> completed (the file and the pipe are ours again).</summary>
    private void OnSpliceCompleted()
    {
        _sendInFlight = false;
        FileRegion region = _spliceRegion!;
        _spliceRegion = null;
        int spliceIn = _spliceInResult;
        int spliceOut = _spliceOutResult;
        if (spliceIn > 0)
        {
            region.Spliced += spliceIn;
        }

        if (spliceOut > 0)
        {
            _stats.BytesSent += spliceOut;
            _writer.OnSent(region, spliceOut);
        }

        if (_shutdownDone)
        {
            EndSend(null);
            return;
        }

        if (spliceIn == 0)
        {
            // End of file inside the counted range: the file was truncated after Kestrel was told its
            // length. The response can only end short: reset the connection, send nothing more.
            FailSend(new ConnectionAbortedException("The file being sent ended before the length announced for it (was it truncated while being sent?)."));
            return;
        }

        if (spliceIn < 0 && spliceIn != int.MinValue && spliceIn is not (-Libc.EAGAIN or -Libc.EINTR or -Libc.ECANCELED))
        {
            FailSend(new IOException($"Reading the file being sent (splice) failed: {ErrnoText.Describe(-spliceIn)}"));
            return;
        }

        if (spliceOut < 0 && spliceOut is not (-Libc.EAGAIN or -Libc.EINTR or -Libc.ECANCELED))
        {
            // The socket failed: exactly as a failed send.
            int errno = -spliceOut;
            if (errno is Libc.EPIPE or Libc.ECONNRESET or Libc.ESHUTDOWN or Libc.ECONNABORTED or Libc.ENOTCONN)
            {
                IoUringLog.ConnectionReset(_logger, ConnectionId);
                _shutdownReason ??= new ConnectionResetException(ErrnoText.Describe(errno), new IOException(ErrnoText.Describe(errno)));
                EndSend(null);
            }
            else
            {
                FailSend(new IOException($"Send failed: {ErrnoText.Describe(errno)}"));
            }

            return;
        }

        // A short or cancelled link (the pipe holds what was not sent), a retry, or the next chunk.
        StartRead();
    }

    /// <summary>Ends the send side abortively (RST): nothing more reaches the socket. Never while a send is in flight.</summary>
    private void FailSend(Exception error)
    {
        _writer.Poison();
        IoUringLog.ConnectionError(_logger, ConnectionId, error);
        _shutdownReason ??= error;
        Shutdown(_shutdownReason);
        EndSend(null);
    }

    /// <summary>Gives back a region's pipe and file. Only when none of its splices is in flight.</summary>
    private void ReleaseRegion(FileRegion region)
    {
        // An empty pipe is reused; one that may hold bytes is closed with them.
        _group.SplicePipes.Return(region.Pipe, empty: region.Spliced == Volatile.Read(ref region.Sent));
        region.File.Dispose();
    }

    /// <summary>The writer counted region bytes or ended a region: let the send loop look. Any thread.</summary>
    internal void WakeSendLoop()
        => _reactor.Schedule(static state => ((IoUringConnection)state!).Guard(static c => c.OnWake()), this);

    private void OnWake()
    {
        if (_readPending && !_sendDone && _reactor.IsOnReactorThread)
        {
            _regionWake = true;
            _output.Reader.CancelPendingRead();
        }
    }

    private void UnpinAll()
    {
        if (_pinCount == -1)
        {
            _singlePin.Dispose();
            _singlePin = default;
        }

        for (int i = 0; i < _pinCount; i++)
        {
            _pins![i].Dispose();
            _pins[i] = default;
        }

        _pinCount = 0;
    }

    /// <summary>The send side is over. Never called while a send is in flight.</summary>
    private void EndSend(Exception? unexpectedError)
    {
        if (_sendDone)
        {
            return;
        }

        _sendDone = true;
        Shutdown(_shutdownReason ?? unexpectedError);
        _outputError = unexpectedError;
        if (Interlocked.Exchange(ref _outputHandoff, OutputSendEnded) == OutputConnectionClosedFired)
        {
            CompleteOutput();
        }

        // No splice is in flight (EndSend never runs while a send is): every region can go now.
        foreach (FileRegion region in _writer.Close())
        {
            ReleaseRegion(region);
        }

        // Unblock a receive paused by backpressure so it can end too.
        _input.Writer.CancelPendingFlush();
    }

    // ---------------- Shutdown, abort, close ----------------

    /// <summary>FIN (reason null, or FinOnError) or RST; runs once. Reactor thread.</summary>
    private void Shutdown(Exception? reason)
    {
        if (_shutdownDone)
        {
            return;
        }

        _shutdownDone = true;
        _shutdownReason = reason ?? new ConnectionAbortedException("The io_uring transport's send loop completed gracefully.");
        if (reason is null || s_finOnError)
        {
            IoUringLog.ConnectionWriteFin(_logger, ConnectionId, _shutdownReason.Message);
            if (!_reactor.IsOnReactorThread || _reactor.IsStopped)
            {
                NativeSocket.Shutdown(_fd, Libc.SHUT_RDWR);
            }

            // Otherwise the FIN goes out with the close (IORING_OP_CLOSE, batched) once the cancelled
            // receive has completed: close sends FIN exactly as shutdown(SHUT_RDWR) + close would, one
            // system call less per connection. (IORING_OP_SHUTDOWN would run on an io-wq thread.)
        }
        else
        {
            IoUringLog.ConnectionWriteRst(_logger, ConnectionId, _shutdownReason.Message);
            // The RST goes out when the fd is closed, after the cancelled operations complete.
            NativeSocket.SetLingerZero(_fd);
        }

        if (_recvArmed)
        {
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindRecv));
        }
        else
        {
            EndReceive(null);
        }

        if (_spliceOps > 0)
        {
            // Cancelling the head of the link cancels the splice linked to it as well.
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindSpliceIn));
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindSpliceOut));
        }
        else if (_sendInFlight)
        {
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindSend));
        }
        else if (_readPending)
        {
            _output.Reader.CancelPendingRead();
        }
    }

    /// <summary>Abortive close (RST), or FIN when <paramref name="abortReason"/> is null. Any thread.</summary>
    public override void Abort(ConnectionAbortedException abortReason) => AbortCore(abortReason);

    private void AbortCore(Exception? abortReason)
    {
        if (_reactor.IsOnReactorThread)
        {
            AbortOnReactor(abortReason);
        }
        else
        {
            _reactor.Schedule(static state =>
            {
                var (connection, reason) = ((IoUringConnection, Exception?))state!;
                connection.Guard(c => c.AbortOnReactor(reason));
            }, (this, abortReason));
        }
    }

    private void AbortOnReactor(Exception? abortReason)
    {
        if (_isClosed || !_reactor.IsOnReactorThread)
        {
            return;
        }

        Shutdown(abortReason);
        _output.Reader.CancelPendingRead();
        MaybeClose();
    }

    /// <summary>Runs a continuation of this connection; an exception in it ends this connection only.</summary>
    private void Guard(Action<IoUringConnection> continuation)
    {
        try
        {
            continuation(this);
        }
        catch (Exception e)
        {
            OnHandlerException(e);
        }
    }

    public void OnReactorStopping()
        => AbortOnReactor(new ConnectionAbortedException("The io_uring transport is shutting down."));

    public void OnHandlerException(Exception exception)
    {
        // A bug in our own handling of this connection: end it, and only it.
        IoUringLog.ConnectionError(_logger, ConnectionId, exception);
        _shutdownReason ??= new ConnectionAbortedException("The io_uring transport failed while handling this connection.", exception);
        AbortOnReactor(_shutdownReason);
        if (!_sendInFlight && !_sendDone)
        {
            if (_readPending)
            {
                _output.Reader.CancelPendingRead();
            }
            else
            {
                EndSend(null);
            }
        }

        MaybeClose();
    }

    /// <summary>Closes the fd once both directions are over and no operation is in flight.</summary>
    private void MaybeClose()
    {
        if (_isClosed || !_recvDone || !_sendDone || _recvArmed || _sendInFlight)
        {
            return;
        }

        _isClosed = true;

        // Every operation on this fd has delivered its final completion: the kernel holds no pointer
        // into our memory and no reference to the fd for us, so it can be closed and memory freed.
        if (_reactor.IsOnReactorThread && !_reactor.IsStopped)
        {
            // Batched with this turn's submission rather than a system call of its own.
            _reactor.QueueClose(_fd);
            _reactor.Unregister(_slot);
        }
        else
        {
            NativeSocket.Close(_fd);
        }

        if (_msg is not null)
        {
            NativeBuffers.Free(_msg, GatherBlockSize);
            _msg = null;
            _iovecs = null;
        }
        Interlocked.Decrement(ref _stats.ActiveConnections);
        _closed.TrySetResult();
    }


    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
