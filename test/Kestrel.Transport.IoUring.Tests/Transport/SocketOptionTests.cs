using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Transport;

/// <summary>
/// The TCP options the transport promises on accepted connections, read back from the server's own
/// socket with getsockopt: set on the listen socket (inherited) for addresses, per connection for an
/// inherited listen handle.
/// </summary>
public partial class SocketOptionTests
{
    private const int IPPROTO_TCP = 6;
    private const int TCP_NODELAY = 1;
    private const int TCP_NOTSENT_LOWAT = 25;

    [SkippableTheory]
    [InlineData(false, 20_000)]
    [InlineData(false, null)]
    [InlineData(true, 20_000)]
    [InlineData(true, null)]
    public async Task AcceptedConnection_CarriesNotSentLowWatermarkAndNoDelay(bool listenHandle, int? lowWatermark)
    {
        IoUringRequirement.Ensure();
        using var inherited = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseIoUring(o => o.NotSentLowWatermark = lowWatermark);
        int port;
        if (listenHandle)
        {
            inherited.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            inherited.Listen();
            port = ((IPEndPoint)inherited.LocalEndPoint!).Port;
            builder.WebHost.ConfigureKestrel(k => k.ListenHandle((ulong)inherited.Handle));
        }
        else
        {
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            port = 0;
        }

        await using WebApplication app = builder.Build();
        app.Run(ctx =>
        {
            ctx.Response.ContentLength = 2;
            return ctx.Response.WriteAsync("ok");
        });
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        port = listenHandle ? port : IoUringApp.PortOf(app);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(IPAddress.Loopback, port);

        // One response back: the transport has accepted the connection and set it up.
        await client.SendAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        byte[] buffer = new byte[1024];
        var response = new StringBuilder();
        while (!response.ToString().EndsWith("ok", StringComparison.Ordinal))
        {
            int n = await client.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.NotEqual(0, n);
            response.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        int serverFd = ServerSideDescriptor(port, ((IPEndPoint)client.LocalEndPoint!).Port);
        // The kernel reports 0 when the socket has no value of its own (the system's setting applies).
        Assert.Equal(lowWatermark ?? 0, GetIntOption(serverFd, IPPROTO_TCP, TCP_NOTSENT_LOWAT));
        Assert.Equal(1, GetIntOption(serverFd, IPPROTO_TCP, TCP_NODELAY));

        await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task NotSentLowWatermark_NotPositive_FailsStartupNamingSetting()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseIoUring(o => o.NotSentLowWatermark = 0);
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        Exception e = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using WebApplication app = builder.Build();
            app.Run(ctx => Task.CompletedTask);
            await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        });
        string message = e.ToString();
        Assert.Contains("IoUringTransportOptions.NotSentLowWatermark", message, StringComparison.Ordinal);
        Assert.Contains("null (the system's setting) or positive", message, StringComparison.Ordinal);
    }

    /// <summary>This process's descriptor of the server end of the loopback connection serverPort &lt;- clientPort.</summary>
    private static int ServerSideDescriptor(int serverPort, int clientPort)
    {
        // /proc/net/tcp: "sl local rem st tx:rx tr:when retr uid timeout inode ...", ports in hex.
        string? inode = null;
        foreach (string line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // State 01 is ESTABLISHED: an old TIME_WAIT entry of the same ports has no socket (inode 0).
            if (PortOf(f[1]) == serverPort && PortOf(f[2]) == clientPort && f[3] == "01")
            {
                inode = f[9];
                break;
            }
        }

        Assert.True(inode is not null, $"no socket 127.0.0.1:{serverPort} <- :{clientPort} in /proc/net/tcp");
        string target = $"socket:[{inode}]";
        foreach ((int fd, string link) in FileDescriptors.Snapshot())
        {
            if (link == target)
            {
                return fd;
            }
        }

        Assert.Fail($"the server's socket {target} is not among this process's descriptors");
        return -1;

        static int PortOf(string address) => int.Parse(address[(address.IndexOf(':') + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    private static unsafe int GetIntOption(int fd, int level, int name)
    {
        int value = 0;
        uint length = sizeof(int);
        // &value and &length are stack locals that outlive the synchronous call.
        int rc = getsockopt(fd, level, name, &value, &length);
        Assert.True(rc == 0, $"getsockopt({fd}, {level}, {name}) failed: errno {Marshal.GetLastPInvokeError()}");
        return value;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int getsockopt(int fd, int level, int name, int* value, uint* length);
}
