using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>What each transport can bind: Unix sockets, IPv6, dynamic ports, and the address-in-use error.</summary>
public class EndpointTests(ITestOutputHelper output)
{
    private static Task Describe(HttpContext ctx)
        => ctx.Response.WriteAsync($"{ctx.Connection.LocalIpAddress}:{ctx.Connection.LocalPort} <- {ctx.Connection.RemoteIpAddress}");

    [SkippableTheory, AllTransports]
    public async Task ListenUnixSocket_RawHttp11_Served(TransportKind transport)
    {
        string path = Path.Combine(Path.GetTempPath(), $"kiou-{Guid.NewGuid():N}.sock");
        try
        {
            await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("over unix"), new TestHostOptions { UnixSocketPath = path, Output = output });
            Assert.Equal($"http://unix:{path}", host.Address);

            await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
            {
                for (int i = 0; i < 3; i++)
                {
                    await connection.SendAsync("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                    RawResponse response = await connection.ReadResponseAsync();
                    Assert.Equal(200, response.StatusCode);
                    Assert.Equal("over unix", response.BodyText);
                }
            }

            await host.StopAndVerifyAsync();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [SkippableTheory, AllTransports]
    public async Task ListenHandle_InheritedListeningSocket_Served(TransportKind transport)
    {
        // What systemd socket activation hands over: a socket someone else bound and may already listen on.
        using var listenSocket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listenSocket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listenSocket.Listen();
        var bound = (IPEndPoint)listenSocket.LocalEndPoint!;

        await using (TestHost host = await TestHost.StartAsync(transport, Describe, new TestHostOptions { ListenHandle = (ulong)listenSocket.Handle, Output = output }))
        {
            await using (RawConnection connection = await RawConnection.ConnectAsync(bound))
            {
                for (int i = 0; i < 3; i++)
                {
                    await connection.SendAsync("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                    RawResponse response = await connection.ReadResponseAsync();
                    Assert.Equal(200, response.StatusCode);
                    Assert.Equal($"127.0.0.1:{bound.Port} <- 127.0.0.1", response.BodyText);
                }
            }

            await host.StopAndVerifyAsync();
        }

        // The handle stays the caller's: the transport must not have closed it.
        Assert.True(listenSocket.Poll(0, SelectMode.SelectError) == false && listenSocket.LocalEndPoint is not null);
    }

    [SkippableTheory, AllTransports]
    public async Task ListenIPv6Loopback_HttpClient_ServedWithIPv6Addresses(TransportKind transport)
    {
        Skip.IfNot(HasIPv6Loopback(), "This machine has no IPv6 loopback ([::1]).");
        await using TestHost host = await TestHost.StartAsync(transport, Describe, new TestHostOptions { Address = IPAddress.IPv6Loopback, Output = output });
        Assert.StartsWith("http://[::1]:", host.Address);

        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            string text = await client.GetStringAsync(host.BaseUri());
            Assert.Equal($"::1:{host.Port} <- ::1", text);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task ListenPortZero_AddressesFeature_ReportsRealBoundPort(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, Describe, new TestHostOptions { Port = 0, Output = output });
        Assert.InRange(host.Port, 1, 65535);

        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            string text = await client.GetStringAsync(host.BaseUri());
            Assert.Equal($"127.0.0.1:{host.Port} <- 127.0.0.1", text);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task ListenPortInUse_StartAsync_ThrowsAddressInUse(TransportKind transport)
    {
        using var blocker = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        blocker.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        blocker.Listen();
        int port = ((IPEndPoint)blocker.LocalEndPoint!).Port;

        await using TestHost host = TestHost.Create(transport, app => app.Run(new RequestDelegate(Describe)), new TestHostOptions
        {
            Port = port,
            Output = output,
            // Kestrel ("Unable to start Kestrel.") and the host ("Hosting failed to start") both log the bind failure.
            ExpectedLog = r => r.Level >= LogLevel.Error && r.Exception is IOException e && e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase),
        });

        IOException error = await Assert.ThrowsAnyAsync<IOException>(host.StartAsync);
        output.WriteLine(error.ToString());
        Assert.Contains("address already in use", error.Message, StringComparison.OrdinalIgnoreCase);
        await host.StopAndVerifyAsync(expectConnections: false);
    }

    private static bool HasIPv6Loopback()
    {
        if (!Socket.OSSupportsIPv6)
        {
            return false;
        }

        try
        {
            using var probe = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
            probe.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
