using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

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
        if (listenHandle)
        {
            inherited.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            inherited.Listen();
        }

        await using WebApplication app = IoUringApp.Build(
            ctx => ctx.Response.WriteAsync("ok"),
            configure: o => o.NotSentLowWatermark = lowWatermark,
            listenHandle: listenHandle ? (ulong)inherited.Handle : null);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        int port = listenHandle ? ((IPEndPoint)inherited.LocalEndPoint!).Port : IoUringApp.PortOf(app);

        await using (RawConnection client = await RawConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)))
        {
            // One response back: the transport has accepted the connection and set it up.
            await client.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            RawResponse response = await client.ReadResponseAsync();
            Assert.Equal("ok", response.BodyText);

            int serverFd = ServerSideDescriptor(port, ((IPEndPoint)client.Socket.LocalEndPoint!).Port);
            // The kernel reports 0 when the socket has no value of its own (the system's setting applies).
            Assert.Equal(lowWatermark ?? 0, GetIntOption(serverFd, IPPROTO_TCP, TCP_NOTSENT_LOWAT));
            Assert.Equal(1, GetIntOption(serverFd, IPPROTO_TCP, TCP_NODELAY));
        }

        await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task NotSentLowWatermark_NotPositive_FailsStartupNamingSetting()
    {
        Exception e = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using WebApplication app = IoUringApp.Build(ctx => Task.CompletedTask, configure: o => o.NotSentLowWatermark = 0);
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
