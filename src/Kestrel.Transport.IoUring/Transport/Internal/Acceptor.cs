using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// The accepts on one listen socket, owned by one reactor: one multishot accept, or (with
/// <see cref="IoUringTransportOptions.UseMultishotAccept"/> off) <see cref="SingleShotDepth"/> single-shot
/// accepts, each with its own native address buffer that the kernel fills with the peer's address.
/// Accept errors never end it: running out of descriptors backs off (existing connections keep being
/// served) and other errors are retried. The listen socket is closed, and the address buffers freed,
/// only after the final completion of every accept.
/// </summary>
internal sealed unsafe class Acceptor : IRingOwner
{
    /// <summary>Single-shot accepts kept in flight per listen socket when multishot accept is off.</summary>
    public const int SingleShotDepth = 8;

    private const byte KindAccept = 1;              // the multishot accept
    private const byte KindSingleShotBase = 16;     // single-shot accept i has kind 16 + i
    private static readonly int s_addressSlotSize = sizeof(sockaddr_storage) + sizeof(ulong); // address, then its socklen_t
    private static readonly TimeSpan s_minBackoff = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan s_maxBackoff = TimeSpan.FromSeconds(1);
    private static readonly long s_logInterval = Stopwatch.Frequency * 5;

    private readonly IoUringConnectionListener _listener;
    private readonly Socket _socket;
    private readonly int _fd;
    private readonly int _reactorIndex;
    private readonly Reactor _reactor;
    private readonly bool _spread;
    private readonly bool _isIp;
    private readonly bool _inheritsSocketOptions; // TCP_NODELAY and TCP_NOTSENT_LOWAT were set on the listen socket
    private readonly EndPoint? _fixedLocalEndPoint; // the local address when it cannot vary per connection
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly bool _multishot;
    private uint _slot;
    private uint _armed;            // bit i: accept i in flight (the multishot accept is bit 0)
    private byte* _addresses;       // single-shot: SingleShotDepth address slots the kernel writes into
    private bool _stopping;
    private bool _finished;
    private TimeSpan _backoff = s_minBackoff;
    private bool _backoffPending;
    private long _lastBackoffLog = long.MinValue / 2;

    public Acceptor(IoUringConnectionListener listener, Socket socket, int reactorIndex, bool spread, bool inheritsSocketOptions)
    {
        _inheritsSocketOptions = inheritsSocketOptions;
        _listener = listener;
        _socket = socket;
        _fd = (int)socket.SafeHandle.DangerousGetHandle();
        _reactorIndex = reactorIndex;
        _reactor = listener.Reactors[reactorIndex];
        _spread = spread;
        _isIp = socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6;
        _multishot = listener.Options.UseMultishotAccept;

        // Bound to one address, every accepted connection has that local endpoint: no getsockname per
        // connection. Wildcard binds ([::] dual-mode, 0.0.0.0) must ask, the address varies.
        if (socket.LocalEndPoint is IPEndPoint bound && !bound.Address.Equals(IPAddress.Any) && !bound.Address.Equals(IPAddress.IPv6Any))
        {
            _fixedLocalEndPoint = bound;
        }
        else if (!_isIp)
        {
            _fixedLocalEndPoint = listener.EndPoint;
        }
    }

    public void Start() => _reactor.Schedule(static state => ((Acceptor)state!).StartOnReactor(), this);

    private void StartOnReactor()
    {
        if (_reactor.IsStopping)
        {
            Finish();
            return;
        }

        _slot = _reactor.Register(this);
        _listener.Reactors.AcceptGate.Add(this);
        if (!_multishot)
        {
            // Freed in Finish, which runs only after the final completion of every accept that points here.
            _addresses = (byte*)NativeBuffers.Allocate((nuint)(SingleShotDepth * s_addressSlotSize), zero: true);
        }

        Arm();
    }

    /// <summary>Arms every accept that is not in flight.</summary>
    private void Arm()
    {
        if (_multishot)
        {
            if (_armed == 0)
            {
                io_uring_sqe* sqe = _reactor.GetSqe(_slot, KindAccept);
                sqe->opcode = IORING_OP_ACCEPT;
                sqe->fd = _fd;
                sqe->ioprio = IORING_ACCEPT_MULTISHOT;
                sqe->accept_flags = Libc.SOCK_CLOEXEC;
                _armed = 1;
                _listener.Reactors.StatsFor(_reactorIndex).AcceptSubmissions++;
            }

            return;
        }

        for (int i = 0; i < SingleShotDepth; i++)
        {
            if ((_armed & (1u << i)) == 0)
            {
                ArmSingleShot(i);
            }
        }
    }

    private void ArmSingleShot(int index)
    {
        // The slot is ours alone until this accept's completion (one accept per slot), and the block
        // outlives it (freed in Finish), so the kernel may write the address and its length here.
        byte* address = _addresses + (index * s_addressSlotSize);
        uint* length = (uint*)(address + sizeof(sockaddr_storage));
        *length = (uint)sizeof(sockaddr_storage);
        io_uring_sqe* sqe = _reactor.GetSqe(_slot, (byte)(KindSingleShotBase + index));
        sqe->opcode = IORING_OP_ACCEPT;
        sqe->fd = _fd;
        sqe->addr = (ulong)address;
        sqe->addr2 = (ulong)length;
        sqe->accept_flags = Libc.SOCK_CLOEXEC;
        _armed |= 1u << index;
        _listener.Reactors.StatsFor(_reactorIndex).AcceptSubmissions++;
    }

    public void OnCompletion(byte kind, int result, uint flags)
    {
        EndPoint? remote = null;
        bool remoteKnown = false;
        if (kind == KindAccept)
        {
            if ((flags & IORING_CQE_F_MORE) == 0)
            {
                _armed = 0;
            }
        }
        else
        {
            int index = kind - KindSingleShotBase;
            _armed &= ~(1u << index);
            if (result >= 0)
            {
                // This accept's final completion: the kernel has written the peer's address and is done
                // with the slot, which stays allocated until Finish.
                byte* address = _addresses + (index * s_addressSlotSize);
                uint length = Math.Min(*(uint*)(address + sizeof(sockaddr_storage)), (uint)sizeof(sockaddr_storage));
                remote = NativeSocket.Parse(new ReadOnlySpan<byte>(address, (int)length));
                remoteKnown = true;
            }
        }

        if (result >= 0)
        {
            _backoff = s_minBackoff;
            OnAccepted(result, remote, remoteKnown);
        }
        else
        {
            OnAcceptError(-result);
        }

        if (!_backoffPending)
        {
            if (_stopping || _reactor.IsStopping)
            {
                if (_armed == 0)
                {
                    Finish();
                }
            }
            else
            {
                Arm();
            }
        }
    }

    private void OnAccepted(int fd, EndPoint? remote, bool remoteKnown)
    {
        if (_stopping || _reactor.IsStopping)
        {
            NativeSocket.Close(fd);
            return;
        }

        if (!_spread)
        {
            CreateConnection(fd, _reactorIndex, remote, remoteKnown);
            return;
        }

        int target = _listener.Reactors.NextIndex();
        if (target == _reactorIndex)
        {
            CreateConnection(fd, target, remote, remoteKnown);
        }
        else
        {
            Reactor reactor = _listener.Reactors[target];
            reactor.Schedule(static state =>
            {
                var (acceptor, fd, target, remote, remoteKnown) = ((Acceptor, int, int, EndPoint?, bool))state!;
                acceptor.CreateConnection(fd, target, remote, remoteKnown);
            }, (this, fd, target, remote, remoteKnown));
        }
    }

    /// <summary>Runs on the reactor that will own the connection.</summary>
    private void CreateConnection(int fd, int reactorIndex, EndPoint? remote, bool remoteKnown)
    {
        Reactor reactor = _listener.Reactors[reactorIndex];
        if (reactor.IsStopping)
        {
            NativeSocket.Close(fd);
            return;
        }

        if (_isIp && !_inheritsSocketOptions)
        {
            if (_listener.Options.NoDelay)
            {
                NativeSocket.SetNoDelay(fd, true);
            }

            if (_listener.Options.NotSentLowWatermark is int lowWatermark)
            {
                NativeSocket.SetNotSentLowWatermark(fd, lowWatermark);
            }
        }

        IoUringConnection connection;
        try
        {
            EndPoint? local = _fixedLocalEndPoint ?? NativeSocket.GetLocalEndPoint(fd);
            if (!remoteKnown)
            {
                _listener.Reactors.StatsFor(reactorIndex).PeerNameLookups++;
                remote = NativeSocket.GetRemoteEndPoint(fd);
            }

            connection = new IoUringConnection(fd, reactor, _listener.Reactors, _listener.Reactors.PoolFor(reactorIndex), _listener.Reactors.StatsFor(reactorIndex), local, remote);
        }
        catch (Exception e)
        {
            // Nothing was issued on this fd yet: closing it ends this one connection.
            NativeSocket.Close(fd);
            IoUringLog.ReactorException(_listener.Logger, e);
            return;
        }

        _listener.Reactors.StatsFor(reactorIndex).ConnectionsAccepted++;
        connection.Start();
        _listener.OnConnectionAccepted(connection);
    }

    private void OnAcceptError(int errno)
    {
        switch (errno)
        {
            case Libc.ECANCELED:
                return;
            case Libc.EMFILE or Libc.ENFILE or Libc.ENOMEM or Libc.ENOBUFS:
                // Out of descriptors or memory: the connection stays in the backlog. Retrying at once
                // would spin, so back off (doubling up to 1 s) while existing connections go on, and
                // give the rest of the process the reserved descriptors at once (see DescriptorReserve).
                if (errno is Libc.EMFILE or Libc.ENFILE)
                {
                    _listener.Reactors.AcceptGate.OnExhausted(this);
                }

                long now = Stopwatch.GetTimestamp();
                if (now - _lastBackoffLog >= s_logInterval)
                {
                    _lastBackoffLog = now;
                    IoUringLog.AcceptBackoff(_listener.Logger, _listener.EndPoint.ToString() ?? "?", ErrnoText.Name(errno), (int)_backoff.TotalMilliseconds);
                }

                // Single-shot accepts still in flight would take the released reserve as soon as a
                // connection arrives (a multishot accept has ended with this error).
                StopAcceptingAndBackOff();
                return;
            default:
                // ECONNABORTED, EPROTO, EPERM (firewall), ENETDOWN...: one connection's problem.
                IoUringLog.AcceptRetry(_listener.Logger, _listener.EndPoint.ToString() ?? "?", ErrnoText.Name(errno));
                return;
        }
    }

    /// <summary>Another acceptor ran out of descriptors: stop accepting here too, and back off.</summary>
    public void BackOffFromAnyThread() => _reactor.Schedule(static state =>
    {
        var acceptor = (Acceptor)state!;
        if (acceptor._backoffPending || acceptor._stopping || acceptor._finished || acceptor._reactor.IsStopping)
        {
            return;
        }

        acceptor.StopAcceptingAndBackOff();
    }, this);

    /// <summary>
    /// Cancels the accepts in flight and backs off. Their final completions (ECANCELED, or an accept that
    /// raced the cancel) find the backoff pending and do not re-arm; the backoff timer does.
    /// </summary>
    private void StopAcceptingAndBackOff()
    {
        if (_armed != 0)
        {
            CancelArmed();
        }

        BackOff();
    }

    /// <summary>One timer at a time: several accepts in flight may fail the same way.</summary>
    private void BackOff()
    {
        if (_backoffPending)
        {
            return;
        }

        _backoffPending = true;
        TimeSpan delay = _backoff;
        _backoff = TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, s_maxBackoff.Ticks));
        _reactor.AddTimer(delay, static state => ((Acceptor)state!).OnBackoffElapsed(), this);
    }

    private void OnBackoffElapsed()
    {
        _backoffPending = false;
        if (_stopping || _reactor.IsStopping)
        {
            if (_armed == 0)
            {
                Finish();
            }
        }
        else if (!_listener.Reactors.AcceptGate.TryResume())
        {
            // Fewer free descriptors than the reserve: accepting now would take the process's last ones.
            BackOff();
        }
        else
        {
            Arm();
        }
    }

    private void CancelArmed()
    {
        if (_multishot)
        {
            _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindAccept));
            return;
        }

        for (int i = 0; i < SingleShotDepth; i++)
        {
            if ((_armed & (1u << i)) != 0)
            {
                _reactor.CancelUserData(_reactor.UserDataFor(_slot, (byte)(KindSingleShotBase + i)));
            }
        }
    }

    public Task StopAsync()
    {
        _reactor.Schedule(static state =>
        {
            var acceptor = (Acceptor)state!;
            acceptor._stopping = true;
            if (acceptor._armed != 0)
            {
                acceptor.CancelArmed();
            }
            else if (!acceptor._backoffPending)
            {
                acceptor.Finish();
            }
        }, this);
        return _stopped.Task;
    }

    public void OnHandlerException(Exception exception)
    {
        IoUringLog.ReactorException(_listener.Logger, exception);
        if (_backoffPending)
        {
            return;
        }

        if (!_stopping && !_reactor.IsStopping)
        {
            Arm();
        }
        else if (_armed == 0)
        {
            Finish();
        }
    }

    public void OnReactorStopping() => _stopping = true;

    private void Finish()
    {
        if (_finished)
        {
            return;
        }

        _finished = true;
        _listener.Reactors.AcceptGate.Remove(this);
        if (_slot != 0)
        {
            _reactor.Unregister(_slot);
            _slot = 0;
        }

        // Every accept's final completion has been seen: the kernel no longer uses this fd or these buffers.
        if (_addresses is not null)
        {
            NativeBuffers.Free(_addresses, (nuint)(SingleShotDepth * s_addressSlotSize));
            _addresses = null;
        }

        _socket.Dispose();
        _stopped.TrySetResult();
    }
}
