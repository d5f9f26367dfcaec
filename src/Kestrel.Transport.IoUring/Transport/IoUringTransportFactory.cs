using System.Buffers;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Transport.Internal;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring;

/// <summary>
/// Kestrel's <see cref="IConnectionListenerFactory"/> for io_uring. It serves TCP (IPv4, IPv6 and
/// dual-mode), Unix domain socket and file handle endpoints; where io_uring is unavailable it answers
/// <see cref="CanBind"/> with false so Kestrel's Sockets transport serves instead.
/// </summary>
public sealed class IoUringTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IAsyncDisposable
{
    private readonly IoUringTransportOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly IMemoryPoolFactory<byte>? _memoryPoolFactory;
    private readonly IoUringMetrics _metrics;
    private readonly Lock _lock = new();
    private ReactorGroup? _reactors;
    private bool _availabilityLogged;
    private bool _disposed;

    /// <summary>Creates the factory; Kestrel does this through dependency injection.</summary>
    public IoUringTransportFactory(IOptions<IoUringTransportOptions> options, ILoggerFactory loggerFactory, IServiceProvider services)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        ArgumentNullException.ThrowIfNull(services);
        _options = options.Value;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger(IoUringLog.Category);
        _memoryPoolFactory = services.GetService(typeof(IMemoryPoolFactory<byte>)) as IMemoryPoolFactory<byte>;
        OptionsValidator.Validate(_options);
        _metrics = new IoUringMetrics(services.GetService(typeof(IMeterFactory)) as IMeterFactory);
    }

    /// <summary>The running reactors (null before the first bind and after disposal); for tests.</summary>
    internal ReactorGroup? Reactors
    {
        get
        {
            lock (_lock)
            {
                return _reactors;
            }
        }
    }

    /// <summary>True when this factory serves its endpoints with io_uring (false after a fallback to Sockets).</summary>
    public bool IsUsingIoUring => !_options.ForceSockets && IoUringProbe.Current.IsSupported;

    /// <inheritdoc />
    public bool CanBind(EndPoint endpoint)
    {
        if (endpoint is not (IPEndPoint or UnixDomainSocketEndPoint or FileHandleEndPoint))
        {
            return false;
        }

        if (endpoint is FileHandleEndPoint { FileHandleType: FileHandleType.Pipe })
        {
            return false;
        }

        return EnsureAvailable();
    }

    private bool EnsureAvailable()
    {
        lock (_lock)
        {
            if (_options.ForceSockets)
            {
                if (!_availabilityLogged)
                {
                    _availabilityLogged = true;
                    IoUringLog.ForcedSockets(_logger);
                }

                return false;
            }

            IoUringProbe probe = IoUringProbe.Current;
            if (!probe.IsSupported)
            {
                if (_options.ThrowIfUnavailable)
                {
                    throw new PlatformNotSupportedException(
                        $"io_uring is unavailable and IoUringTransportOptions.ThrowIfUnavailable is set: {probe.Reason} Clear ThrowIfUnavailable to serve with the Sockets transport instead.");
                }

                if (!_availabilityLogged)
                {
                    _availabilityLogged = true;
                    _metrics.OnFallback();
                    IoUringLog.FallingBackToSockets(_logger, probe.Reason ?? "unknown");
                }

                return false;
            }

            return true;
        }
    }

    /// <inheritdoc />
    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!CanBind(endpoint))
        {
            throw new NotSupportedException($"The io_uring transport cannot bind {endpoint} ({endpoint.GetType().Name}).");
        }

        ReactorGroup reactors = GetOrStartReactors();
        var listener = new IoUringConnectionListener(endpoint, _options, reactors, _logger);
        listener.Bind();
        return ValueTask.FromResult<IConnectionListener>(listener);
    }

    private ReactorGroup GetOrStartReactors()
    {
        lock (_lock)
        {
            if (_reactors is null)
            {
                _reactors = new ReactorGroup(_options, _memoryPoolFactory, _loggerFactory);
                _reactors.Start();
                _metrics.Attach(_reactors);
                IoUringLog.TransportStarted(_logger, _reactors.Count, _reactors.DescribeFeatures());
            }

            return _reactors;
        }
    }

    /// <summary>Stops the reactors once every connection on them has ended.</summary>
    public async ValueTask DisposeAsync()
    {
        ReactorGroup? reactors;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            reactors = _reactors;
            _reactors = null;
        }

        if (reactors is not null)
        {
            await reactors.DisposeAsync().ConfigureAwait(false);
        }

        _metrics.Detach();
        _metrics.Dispose();
    }
}
