using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>How a <see cref="TestHost"/> listens and what it tolerates.</summary>
public sealed class TestHostOptions
{
    /// <summary>The TCP address to listen on; ignored when <see cref="UnixSocketPath"/> is set.</summary>
    public IPAddress Address { get; init; } = IPAddress.Loopback;

    /// <summary>The TCP port; 0 lets the kernel pick.</summary>
    public int Port { get; init; }

    /// <summary>Listen on this Unix domain socket path instead of TCP.</summary>
    public string? UnixSocketPath { get; init; }

    /// <summary>Listen on an already-listening socket's handle (ListenHandle, as systemd socket activation does) instead of an address.</summary>
    public ulong? ListenHandle { get; init; }

    /// <summary>More endpoint setup (UseHttps, Protocols), applied after the connection-type recorder.</summary>
    public Action<ListenOptions>? ConfigureListen { get; init; }

    /// <summary>More host setup (services, transport options), applied after the transport is chosen.</summary>
    public Action<WebApplicationBuilder>? ConfigureBuilder { get; init; }

    /// <summary>More server setup (limits).</summary>
    public Action<KestrelServerOptions>? ConfigureKestrel { get; init; }

    /// <summary>Applied to whichever transport runs; same default as both transports (1 MiB).</summary>
    public long? MaxReadBufferSize { get; init; } = 1024 * 1024;

    /// <summary>Applied to whichever transport runs; same default as both transports (64 KiB).</summary>
    public long? MaxWriteBufferSize { get; init; } = 64 * 1024;

    /// <summary>More io_uring transport setup (ring and buffer sizes); ignored by Sockets runs.</summary>
    public Action<IoUringTransportOptions>? ConfigureIoUring { get; init; }

    /// <summary>Records at Warning or above that the test expects; any other such record fails the test.</summary>
    public Func<LogRecord, bool>? ExpectedLog { get; init; }

    /// <summary>Kestrel's graceful shutdown allowance before it aborts connections.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Where to print the host's log when a check fails.</summary>
    public ITestOutputHelper? Output { get; init; }
}

/// <summary>
/// A real Kestrel server on the chosen transport, instrumented for the checks every functional test
/// makes after the host stops: the expected transport served every connection, every pool block came
/// back, no file descriptor leaked, and nothing unexpected was logged at Warning or above.
/// </summary>
public sealed class TestHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TestHostOptions _options;
    private readonly Dictionary<int, string> _fdsBefore;
    private readonly ConcurrentQueue<string> _connectionTypes = new();
    private Task? _stopTask;
    private bool _disposed;

    static TestHost()
    {
        WarmUpRuntime();
    }

    private TestHost(TransportKind transport, Action<WebApplication> configureApp, TestHostOptions options)
    {
        Transport = transport;
        _options = options;
        _fdsBefore = FileDescriptors.Snapshot();

        WebApplicationBuilder builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        switch (transport)
        {
            case TransportKind.IoUring:
                builder.WebHost.UseIoUring(o =>
                {
                    o.MaxReadBufferSize = options.MaxReadBufferSize;
                    o.MaxWriteBufferSize = options.MaxWriteBufferSize;
                    options.ConfigureIoUring?.Invoke(o);
                });
                break;
            case TransportKind.Sockets:
                builder.WebHost.UseSockets(o =>
                {
                    o.MaxReadBufferSize = options.MaxReadBufferSize;
                    o.MaxWriteBufferSize = options.MaxWriteBufferSize;
                });
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(transport));
        }

        options.ConfigureBuilder?.Invoke(builder);

        // After UseKestrelCore, so this registration wins over Kestrel's pinned block pool.
        builder.Services.AddSingleton<IMemoryPoolFactory<byte>>(Pool);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(Logs);
        builder.Logging.SetMinimumLevel(LogLevel.Debug);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            options.ConfigureKestrel?.Invoke(kestrel);
            if (options.UnixSocketPath is { } path)
            {
                kestrel.ListenUnixSocket(path, ConfigureListen);
            }
            else if (options.ListenHandle is { } handle)
            {
                kestrel.ListenHandle(handle, ConfigureListen);
            }
            else
            {
                kestrel.Listen(options.Address, options.Port, ConfigureListen);
            }
        });

        _app = builder.Build();
        configureApp(_app);
    }

    public TransportKind Transport { get; }

    public DiagnosticMemoryPoolFactory Pool { get; } = new();

    public CapturingLoggerProvider Logs { get; } = new();

    /// <summary>The full type name of every connection context the transport handed to Kestrel.</summary>
    public IReadOnlyCollection<string> ConnectionTypes => _connectionTypes;

    public IServiceProvider Services => _app.Services;

    /// <summary>The address Kestrel reports it is listening on (http://127.0.0.1:port, http://unix:/path).</summary>
    public string Address => _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();

    /// <summary>The real bound TCP port, read from IServerAddressesFeature.</summary>
    public int Port => new Uri(Address).Port;

    /// <summary>Where a client connects: the real TCP endpoint or the Unix socket.</summary>
    public EndPoint EndPoint => _options.UnixSocketPath is { } path
        ? new UnixDomainSocketEndPoint(path)
        : new IPEndPoint(_options.Address, Port);

    /// <summary>http://127.0.0.1:port/ (or https when <paramref name="https"/>), for HttpClient.</summary>
    public Uri BaseUri(bool https = false) => new UriBuilder(Address) { Scheme = https ? "https" : "http", Host = _options.Address.ToString() }.Uri;

    /// <summary>The io_uring factory when this host runs io_uring (null for Sockets).</summary>
    public IoUringTransportFactory? IoUringFactory => _app.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().SingleOrDefault();

    /// <summary>Builds a host without starting it (for tests that expect startup to fail).</summary>
    public static TestHost Create(TransportKind transport, Action<WebApplication> configureApp, TestHostOptions? options = null)
    {
        transport.EnsureAvailable();
        return new TestHost(transport, configureApp, options ?? new TestHostOptions());
    }

    public static Task<TestHost> StartAsync(TransportKind transport, RequestDelegate handler, TestHostOptions? options = null)
        => StartAsync(transport, app => app.Run(handler), options);

    public static async Task<TestHost> StartAsync(TransportKind transport, Action<WebApplication> configureApp, TestHostOptions? options = null)
    {
        TestHost host = Create(transport, configureApp, options);
        try
        {
            await host.StartAsync();
            return host;
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }
    }

    public Task StartAsync() => _app.StartAsync().WaitAsync(Timeouts.Step);

    /// <summary>Stops Kestrel gracefully (bounded by the shutdown timeout); idempotent.</summary>
    public Task StopAsync() => _stopTask ??= StopCoreAsync();

    private async Task StopCoreAsync()
    {
        using var cts = new CancellationTokenSource(_options.ShutdownTimeout);
        await _app.StopAsync(cts.Token).WaitAsync(_options.ShutdownTimeout + Timeouts.Step);
        await _app.DisposeAsync().AsTask().WaitAsync(Timeouts.Step);
        _disposed = true;
    }

    /// <summary>
    /// Stops the host, then checks what every test must hold. Call it last, after disposing clients.
    /// </summary>
    /// <param name="expectConnections">False for tests in which no client ever connected.</param>
    public async Task StopAndVerifyAsync(bool expectConnections = true)
    {
        await StopAsync();
        var failures = new List<string>();

        if (expectConnections && _connectionTypes.IsEmpty)
        {
            failures.Add("No connection reached Kestrel, so the test proved nothing about the transport.");
        }

        string prefix = Transport.ConnectionTypePrefix();
        foreach (string type in _connectionTypes.Distinct())
        {
            if (!type.StartsWith(prefix, StringComparison.Ordinal))
            {
                failures.Add($"A connection was served by {type}, not by the {Transport} transport ({prefix}*).");
            }
        }

        if (!await Pool.WhenAllBlocksReturnedAsync(Timeouts.Settle))
        {
            failures.Add($"{Pool.Outstanding} memory pool block(s) were never returned ({Pool.Rented} rented, {Pool.Returned} returned).");
        }

        if (Pool.DoubleReturns != 0)
        {
            failures.Add($"{Pool.DoubleReturns} memory pool block(s) were returned twice.");
        }

        IReadOnlyList<string> leakedFds = await FileDescriptors.WaitForNoGrowthAsync(_fdsBefore, Timeouts.Settle);
        if (leakedFds.Count != 0)
        {
            failures.Add($"File descriptors leaked ({_fdsBefore.Count} before the host started):{Environment.NewLine}    {string.Join(Environment.NewLine + "    ", leakedFds)}");
        }

        List<LogRecord> unexpected = Logs.Records
            .Where(r => r.Level >= LogLevel.Warning && _options.ExpectedLog?.Invoke(r) != true)
            .ToList();
        if (unexpected.Count != 0)
        {
            failures.Add($"Unexpected log records at Warning or above:{Environment.NewLine}{Logs.Format(unexpected)}");
        }

        if (failures.Count != 0)
        {
            DumpLog();
            Assert.Fail(string.Join(Environment.NewLine, failures));
        }
    }

    /// <summary>Asserts no Kestrel or transport record above Debug was logged since <paramref name="mark"/> (from <see cref="CapturingLoggerProvider.Mark"/>).</summary>
    public void AssertNothingAboveDebugSince(long mark)
    {
        List<LogRecord> records = Logs.Records
            .Where(r => r.Sequence >= mark && r.Level > LogLevel.Debug && IsServerCategory(r.Category))
            .ToList();
        if (records.Count != 0)
        {
            DumpLog();
            Assert.Fail($"Expected nothing above Debug from Kestrel or the transport, but got:{Environment.NewLine}{Logs.Format(records)}");
        }
    }

    private static bool IsServerCategory(string category)
        => category.StartsWith("Microsoft.AspNetCore.Server.Kestrel", StringComparison.Ordinal)
        || category.StartsWith("Kestrel.Transport.IoUring", StringComparison.Ordinal);

    public void DumpLog()
    {
        _options.Output?.WriteLine($"Log of the {Transport} host:{Environment.NewLine}{Logs.Format(Logs.Records, max: 2000)}");
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            await StopAsync();
        }
        catch (Exception)
        {
            // Cleanup after a failed test: the failure that matters has already been thrown.
            _disposed = true;
        }
    }

    private void ConfigureListen(ListenOptions listen)
    {
        listen.Use(next => context =>
        {
            _connectionTypes.Enqueue(context.GetType().FullName ?? context.GetType().Name);
            return next(context);
        });
        _options.ConfigureListen?.Invoke(listen);
    }

    /// <summary>
    /// The runtime opens some descriptors once per process on first use (the Sockets epoll engines, the
    /// signal-handling pipe of the host's console lifetime, the io_uring probe). Open them now, so the
    /// first test's leak check does not count them.
    /// </summary>
    private static void WarmUpRuntime()
    {
        _ = IoUringSupport.IsSupported;
        WebApplicationBuilder builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        WebApplication app = builder.Build();
        app.StartAsync().WaitAsync(Timeouts.Step).GetAwaiter().GetResult();
        app.StopAsync().WaitAsync(Timeouts.Step).GetAwaiter().GetResult();
        app.DisposeAsync().AsTask().WaitAsync(Timeouts.Step).GetAwaiter().GetResult();

        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Task connect = client.ConnectAsync(listener.LocalEndPoint!);
        using Socket server = listener.AcceptAsync().WaitAsync(Timeouts.Step).GetAwaiter().GetResult();
        connect.WaitAsync(Timeouts.Step).GetAwaiter().GetResult();
        client.SendAsync(new byte[] { 1 }).WaitAsync(Timeouts.Step).GetAwaiter().GetResult();
        server.ReceiveAsync(new byte[1]).WaitAsync(Timeouts.Step).GetAwaiter().GetResult();
    }
}
