using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// A multishot accept on one listen socket, owned by one reactor. Accept errors never end it: running
/// out of descriptors backs off (existing connections keep being served) and other errors are retried.
/// The listen socket is closed only after the accept's final completion.
/// </summary>
internal sealed unsafe class Acceptor : IRingOwner
{
    private const byte KindAccept = 1;
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
    private readonly bool _inheritsNoDelay;
    private readonly EndPoint? _fixedLocalEndPoint; // the local address when it cannot vary per connection
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private uint _slot;
    private bool _armed;
    private bool _stopping;
    private bool _finished;
    private TimeSpan _backoff = s_minBackoff;
    private bool _backoffPending;
    private long _lastBackoffLog = long.MinValue / 2;

    public Acceptor(IoUringConnectionListener listener, Socket socket, int reactorIndex, bool spread, bool inheritsNoDelay)
    {
        _inheritsNoDelay = inheritsNoDelay;
        _listener = listener;
        _socket = socket;
        _fd = (int)socket.SafeHandle.DangerousGetHandle();
        _reactorIndex = reactorIndex;
        _reactor = listener.Reactors[reactorIndex];
        _spread = spread;
        _isIp = socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6;

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
        Arm();
    }

    private void Arm()
    {
        io_uring_sqe* sqe = _reactor.GetSqe(_slot, KindAccept);
        sqe->opcode = IORING_OP_ACCEPT;
        sqe->fd = _fd;
        sqe->ioprio = IORING_ACCEPT_MULTISHOT;
        sqe->accept_flags = Libc.SOCK_CLOEXEC;
        _armed = true;
    }

    public void OnCompletion(byte kind, int result, uint flags)
    {
        bool more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more)
        {
            _armed = false;
        }

        if (result >= 0)
        {
            _backoff = s_minBackoff;
            OnAccepted(result);
        }
        else
        {
            OnAcceptError(-result);
        }

        if (!_armed && !_backoffPending)
        {
            if (_stopping || _reactor.IsStopping)
            {
                Finish();
            }
            else
            {
                Arm();
            }
        }
    }

    private void OnAccepted(int fd)
    {
        if (_stopping || _reactor.IsStopping)
        {
            NativeSocket.Close(fd);
            return;
        }

        if (!_spread)
        {
            CreateConnection(fd, _reactorIndex);
            return;
        }

        int target = _listener.Reactors.NextIndex();
        if (target == _reactorIndex)
        {
            CreateConnection(fd, target);
        }
        else
        {
            Reactor reactor = _listener.Reactors[target];
            reactor.Schedule(static state =>
            {
                var (acceptor, fd, target) = ((Acceptor, int, int))state!;
                acceptor.CreateConnection(fd, target);
            }, (this, fd, target));
        }
    }

    /// <summary>Runs on the reactor that will own the connection.</summary>
    private void CreateConnection(int fd, int reactorIndex)
    {
        Reactor reactor = _listener.Reactors[reactorIndex];
        if (reactor.IsStopping)
        {
            NativeSocket.Close(fd);
            return;
        }

        if (_isIp && !_inheritsNoDelay && _listener.Options.NoDelay)
        {
            NativeSocket.SetNoDelay(fd, true);
        }

        IoUringConnection connection;
        try
        {
            EndPoint? local = _fixedLocalEndPoint ?? NativeSocket.GetLocalEndPoint(fd);
            EndPoint? remote = NativeSocket.GetRemoteEndPoint(fd);
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

                if (_armed)
                {
                    // Still armed (should not happen for these errors): stop it so the backoff holds.
                    _reactor.CancelUserData(_reactor.UserDataFor(_slot, KindAccept));
                }

                BackOff();
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

        if (acceptor._armed)
        {
            // Its final completion (ECANCELED, or an accept that raced the cancel) finds the backoff
            // pending and does not re-arm; the backoff timer does.
            acceptor._reactor.CancelUserData(acceptor._reactor.UserDataFor(acceptor._slot, KindAccept));
        }

        acceptor.BackOff();
    }, this);

    private void BackOff()
    {
        _backoffPending = true;
        TimeSpan delay = _backoff;
        _backoff = TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, s_maxBackoff.Ticks));
        _reactor.AddTimer(delay, static state => ((Acceptor)state!).OnBackoffElapsed(), this);
    }

    private void OnBackoffElapsed()
    {
        _backoffPending = false;
        if (_armed)
        {
            return;
        }

        if (_stopping || _reactor.IsStopping)
        {
            Finish();
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

    public Task StopAsync()
    {
        _reactor.Schedule(static state =>
        {
            var acceptor = (Acceptor)state!;
            acceptor._stopping = true;
            if (acceptor._armed)
            {
                acceptor._reactor.CancelUserData(acceptor._reactor.UserDataFor(acceptor._slot, KindAccept));
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
        if (!_armed && !_backoffPending && !_stopping)
        {
            Arm();
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

        // The accept's final completion has been seen: the kernel no longer uses this fd.
        _socket.Dispose();
        _stopped.TrySetResult();
    }
}
