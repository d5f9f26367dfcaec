using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// One bound endpoint. IP endpoints get one SO_REUSEPORT listen socket per reactor, each accepted by
/// a multishot accept on its own reactor's ring, so the kernel spreads connections over reactors.
/// Unix domain sockets and inherited handles have one listen socket; its connections are spread over
/// reactors round-robin. Accepted connections queue in a channel that <see cref="AcceptAsync"/> drains.
/// </summary>
internal sealed class IoUringConnectionListener : IConnectionListener
{
    private const int BindAttempts = 5;

    private readonly EndPoint _requested;
    private readonly IoUringTransportOptions _options;
    private readonly ReactorGroup _reactors;
    private readonly ILogger _logger;
    // Synchronous continuations: Kestrel's accept loop resumes inside TryWrite on the reactor thread.
    // It only registers the connection and queues it to the thread pool (which Kestrel does anyway), so
    // this saves a thread-pool hop per accepted connection without running application code here.
    private readonly Channel<IoUringConnection> _accepted = Channel.CreateUnbounded<IoUringConnection>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = true });
    private readonly List<Acceptor> _acceptors = [];
    private readonly Lock _lock = new();
    private Task? _unbindTask;
    private string? _unixSocketPathToDelete;

    public IoUringConnectionListener(EndPoint endpoint, IoUringTransportOptions options, ReactorGroup reactors, ILogger logger)
    {
        _requested = endpoint;
        EndPoint = endpoint;
        _options = options;
        _reactors = reactors;
        _logger = logger;
    }

    public EndPoint EndPoint { get; private set; }

    internal ReactorGroup Reactors => _reactors;

    internal ILogger Logger => _logger;

    internal IoUringTransportOptions Options => _options;

    /// <summary>Binds and listens before returning, so the real port is known (port 0).</summary>
    public void Bind()
    {
        List<Socket> sockets = _requested switch
        {
            IPEndPoint ip => BindReusePort(ip),
            _ => [BindSingle(_requested)],
        };

        bool spread = _requested is not IPEndPoint;
        for (int i = 0; i < sockets.Count; i++)
        {
            int reactorIndex = spread ? _reactors.NextIndex() : i;
            _acceptors.Add(new Acceptor(this, sockets[i], reactorIndex, spread, inheritsSocketOptions: !spread));
        }

        foreach (Acceptor acceptor in _acceptors)
        {
            acceptor.Start();
        }
    }

    private List<Socket> BindReusePort(IPEndPoint requested)
    {
        for (int attempt = 1; ; attempt++)
        {
            // A plain bind first: it fails with EADDRINUSE if anyone holds the port, including another
            // SO_REUSEPORT group (which our reuseport sockets would otherwise silently join).
            IPEndPoint actual;
            using (Socket probe = CreateIpSocket(requested, reusePort: false))
            {
                BindOrThrow(probe, requested);
                actual = (IPEndPoint)probe.LocalEndPoint!;
            }

            List<Socket> sockets = [];
            try
            {
                var target = new IPEndPoint(requested.Address, actual.Port);
                for (int i = 0; i < _reactors.Count; i++)
                {
                    Socket socket = CreateIpSocket(requested, reusePort: true);
                    sockets.Add(socket);

                    // Accepted sockets inherit TCP_NODELAY and TCP_NOTSENT_LOWAT from the listen socket: no
                    // setsockopt per connection.
                    socket.NoDelay = _options.NoDelay;
                    if (_options.NotSentLowWatermark is int lowWatermark)
                    {
                        socket.SetRawSocketOption(Libc.IPPROTO_TCP, Libc.TCP_NOTSENT_LOWAT, BitConverter.GetBytes(lowWatermark));
                    }
                    BindOrThrow(socket, target);
                    socket.Listen(_options.Backlog);
                }

                EndPoint = sockets[0].LocalEndPoint!;
                return sockets;
            }
            catch (AddressInUseException) when (requested.Port == 0 && attempt < BindAttempts)
            {
                // The port was taken between the probe and the group bind; pick another.
                DisposeAll(sockets);
            }
            catch
            {
                DisposeAll(sockets);
                throw;
            }
        }
    }

    private static Socket CreateIpSocket(IPEndPoint endpoint, bool reusePort)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            // Raw SO_REUSEADDR (restart while old connections linger in TIME_WAIT): .NET's
            // SocketOptionName.ReuseAddress also sets SO_REUSEPORT on Linux, which would let the probe
            // socket join another process's group instead of detecting it.
            socket.SetRawSocketOption(Interop.Libc.SOL_SOCKET, Interop.Libc.SO_REUSEADDR, BitConverter.GetBytes(1));
            if (reusePort)
            {
                socket.SetRawSocketOption(Interop.Libc.SOL_SOCKET, Interop.Libc.SO_REUSEPORT, BitConverter.GetBytes(1));
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static void BindOrThrow(Socket socket, EndPoint endpoint)
    {
        try
        {
            socket.Bind(endpoint);
        }
        catch (SocketException e) when (NativeSocket.IsAddressInUse(e))
        {
            throw new AddressInUseException(e.Message, e);
        }
    }

    private Socket BindSingle(EndPoint endpoint)
    {
        Socket socket;
        try
        {
            socket = SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
        }
        catch (SocketException e) when (NativeSocket.IsAddressInUse(e))
        {
            throw new AddressInUseException(e.Message, e);
        }

        try
        {
            socket.Listen(_options.Backlog);
            EndPoint = socket.LocalEndPoint ?? endpoint;
            if (endpoint is UnixDomainSocketEndPoint uds && uds.ToString() is { Length: > 0 } path && path[0] != '\0' && path[0] != '@')
            {
                _unixSocketPathToDelete = path;
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static void DisposeAll(List<Socket> sockets)
    {
        foreach (Socket socket in sockets)
        {
            socket.Dispose();
        }

        sockets.Clear();
    }

    /// <summary>Called on a reactor thread with a connection ready to hand to Kestrel.</summary>
    internal void OnConnectionAccepted(IoUringConnection connection)
    {
        if (!_accepted.Writer.TryWrite(connection))
        {
            // Unbound meanwhile: nobody will take this connection.
            connection.Abort(new ConnectionAbortedException("The listener was unbound."));
            _ = connection.DisposeAsync().AsTask();
        }
    }

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            while (await _accepted.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                if (_accepted.Reader.TryRead(out IoUringConnection? connection))
                {
                    return connection;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (ChannelClosedException)
        {
        }

        return null;
    }

    /// <summary>Stops accepting: cancels every accept, closes the listen sockets after their final completion.</summary>
    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            _unbindTask ??= UnbindCoreAsync();
        }

        return new ValueTask(_unbindTask);
    }

    private async Task UnbindCoreAsync()
    {
        Task[] stopped = new Task[_acceptors.Count];
        for (int i = 0; i < _acceptors.Count; i++)
        {
            stopped[i] = _acceptors[i].StopAsync();
        }

        await Task.WhenAll(stopped).ConfigureAwait(false);
        _accepted.Writer.TryComplete();

        // Connections accepted but never handed to Kestrel end here.
        while (_accepted.Reader.TryRead(out IoUringConnection? connection))
        {
            connection.Abort(new ConnectionAbortedException("The listener was unbound."));
            await connection.DisposeAsync().ConfigureAwait(false);
        }

        if (_unixSocketPathToDelete is not null)
        {
            try
            {
                File.Delete(_unixSocketPathToDelete);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    public ValueTask DisposeAsync() => UnbindAsync();
}
