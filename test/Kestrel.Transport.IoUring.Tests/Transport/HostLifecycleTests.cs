using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Kestrel.Transport.IoUring.Tests.Transport;

public class HostLifecycleTests
{
    private static int CountThreads(string prefix)
        => Directory.GetDirectories("/proc/self/task").Count(t => ReadComm(t).StartsWith(prefix, StringComparison.Ordinal));

    private static string ReadComm(string taskDirectory)
    {
        try
        {
            return File.ReadAllText(Path.Combine(taskDirectory, "comm"));
        }
        catch (IOException)
        {
            return string.Empty; // the thread exited while we looked
        }
    }

    [SkippableFact]
    public async Task StartStop_FiftyHosts_LeaksNoFdThreadNativeOrManagedMemory()
    {
        IoUringRequirement.Ensure();

        // One warm-up cycle: the runtime opens descriptors of its own on first use (sockets, epoll).
        await RunOneHostAsync();
        await Task.Delay(200);
        Dictionary<int, string> fdsBefore = FileDescriptors.Snapshot();
        long nativeBlocksBefore = NativeBuffers.LiveBlocks;
        long managedBefore = GC.GetTotalMemory(forceFullCollection: true);

        for (int i = 0; i < 50; i++)
        {
            await RunOneHostAsync();
        }

        // Reactor threads end after their ring is released; allow the last ones a moment to exit.
        int reactors = 0;
        for (int attempt = 0; attempt < 50 && (reactors = CountThreads("io_uring reacto")) != 0; attempt++)
        {
            await Task.Delay(100);
        }

        Assert.Equal(0, reactors);

        // Every receive slab, buffer ring, wake buffer and gather block the hosts allocated was freed.
        Assert.Equal(nativeBlocksBefore, NativeBuffers.LiveBlocks);

        // Managed memory: nothing per host may survive (a leaked host keeps its DI container, Kestrel and
        // reactors alive: hundreds of KB each, so 50 of them would show far above this bound).
        long managedGrowth = GC.GetTotalMemory(forceFullCollection: true) - managedBefore;
        Assert.True(managedGrowth < 4 * 1024 * 1024, $"managed memory grew by {managedGrowth:N0} bytes over 50 host start/stop cycles");
        IReadOnlyList<string> leaked = await FileDescriptors.WaitForNoGrowthAsync(fdsBefore, TimeSpan.FromSeconds(5));
        Assert.True(leaked.Count == 0, $"file descriptors leaked over 50 host start/stop cycles: {string.Join(", ", leaked)}");
    }

    private static async Task RunOneHostAsync()
    {
        await using WebApplication app = IoUringApp.Build(context => context.Response.WriteAsync("ok"), configure: o => o.ThrowIfUnavailable = true);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        int port = IoUringApp.PortOf(app);

        // A kept-alive connection still open at shutdown, and one finished request.
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        byte[] buffer = new byte[4096];
        int n = await socket.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Contains("200 OK", Encoding.ASCII.GetString(buffer, 0, n), StringComparison.Ordinal);
        await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(15));
    }
}
