using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>
/// The Echo sample under a low RLIMIT_NOFILE: accept fails with EMFILE, and the transport must back off
/// (logging it) without spinning, keep serving what it has, and accept again once descriptors are free.
/// The backoff is io_uring's own (Sockets leaves it to Kestrel's accept loop), so this is a fact.
/// </summary>
public class FileDescriptorExhaustionTests(ITestOutputHelper output)
{
    // The runtime itself holds about 170 descriptors once Echo listens (assemblies, pipes, rings):
    // 256 leaves room for several dozen connections before accept fails.
    private const int FileLimit = 256;
    private const string BackoffWarning = "the process is out of file descriptors";

    // Two things must hold at the limit. The transport backs off without spinning and recovers. And it
    // never leaves the process at its limit: the runtime itself needs descriptors now and then (starting a
    // thread pool thread reads /proc and makes a pipe), and without them it ended this very process with
    // "Out of memory." in 2 of 6 runs, right when connections closed during the backoff. So accepting
    // stops DescriptorReserve.DefaultSize descriptors short of the limit, checked below from /proc.
    [Fact]
    public async Task Accept_OutOfFileDescriptors_BacksOffQuietlyKeepsServingAndRecovers()
    {
        IoUringRequirement.Ensure();
        await using SampleProcess echo = SampleProcess.Start("Echo", ["--transport", "iouring", "--require-iouring", "--port", "0"], fileDescriptorLimit: FileLimit);
        Uri address = await echo.WaitForListeningAsync();
        var endPoint = new IPEndPoint(IPAddress.Loopback, address.Port);
        var served = new List<Socket>();
        var pending = new List<Socket>();
        int unanswered = -1;
        try
        {
            // Open connections, each proved served by an echo, until one is not accepted.
            for (int i = 0; i < FileLimit && pending.Count == 0; i++)
            {
                Socket socket = await ConnectAsync(endPoint);
                if (await TryRoundTripAsync(socket, i, TimeSpan.FromSeconds(2)))
                {
                    served.Add(socket);
                }
                else
                {
                    pending.Add(socket);
                    unanswered = i;
                }
            }

            output.WriteLine($"{served.Count} connections served before accept failed.");
            Assert.True(pending.Count == 1, $"Accept never failed within {FileLimit} connections under ulimit -n {FileLimit}.");
            // A few more waiting in the backlog keep the accept failing.
            for (int i = 0; i < 4; i++)
            {
                pending.Add(await ConnectAsync(endPoint));
            }

            await WaitForAsync(() => echo.Output.Contains(BackoffWarning, StringComparison.Ordinal), TimeSpan.FromSeconds(10), "the accept backoff warning");

            // No busy loop: over a few seconds of backoff the server is nearly idle.
            TimeSpan cpuBefore = CpuTime(echo.Id);
            var clock = Stopwatch.StartNew();
            await Task.Delay(TimeSpan.FromSeconds(3));
            TimeSpan cpu = CpuTime(echo.Id) - cpuBefore;
            output.WriteLine($"Server CPU over {clock.Elapsed.TotalSeconds:0.0} s of backoff: {cpu.TotalMilliseconds:0} ms");
            Assert.True(cpu < TimeSpan.FromMilliseconds(400), $"The server used {cpu.TotalMilliseconds:0} ms of CPU in {clock.Elapsed.TotalSeconds:0.0} s while accept kept failing: it is spinning.");

            // Headroom for the rest of the process while accept backs off: the reserve was handed over.
            // The smallest of a few samples: accepting is re-tried (briefly taking the reserve back) each second.
            int fewestOpen = int.MaxValue;
            for (int i = 0; i < 5; i++)
            {
                fewestOpen = Math.Min(fewestOpen, Directory.GetFileSystemEntries($"/proc/{echo.Id}/fd").Length);
                await Task.Delay(100);
            }

            output.WriteLine($"Server descriptors open during backoff: {fewestOpen} of {FileLimit}");
            Assert.True(fewestOpen <= FileLimit - 8, $"The server holds {fewestOpen} of its {FileLimit} descriptors while accept backs off: nothing is left for the rest of the process.");

            // The connections it has keep working.
            for (int i = 0; i < served.Count; i++)
            {
                Assert.True(await TryRoundTripAsync(served[i], 1000 + i, Timeouts.Step), $"Served connection {i} stopped echoing while accept was failing.");
            }

            // Free descriptors: the waiting connections are accepted (within the 1 s maximum backoff) and served.
            foreach (Socket socket in served.Take(20))
            {
                socket.Dispose();
            }

            served.RemoveRange(0, 20);
            Assert.True(await TryReceiveEchoAsync(pending[0], unanswered, TimeSpan.FromSeconds(10)), "The connection waiting in the backlog was not served after descriptors were freed.");
            for (int i = 0; i < pending.Count; i++)
            {
                Assert.True(await TryRoundTripAsync(pending[i], 2000 + i, TimeSpan.FromSeconds(10)), $"Connection {i} waiting in the backlog was not served after descriptors were freed.");
            }

            using Socket fresh = await ConnectAsync(endPoint);
            Assert.True(await TryRoundTripAsync(fresh, 3000, TimeSpan.FromSeconds(10)), "A new connection was not served after recovery.");
        }
        catch
        {
            output.WriteLine(echo.Output);
            throw;
        }
        finally
        {
            foreach (Socket socket in served.Concat(pending))
            {
                socket.Dispose();
            }
        }

        Assert.Equal(0, await echo.StopAsync());
        output.WriteLine(echo.Output);
        Assert.DoesNotContain("fail:", echo.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("crit:", echo.Output, StringComparison.Ordinal);
    }

    private static async Task<Socket> ConnectAsync(IPEndPoint endPoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint).WaitAsync(Timeouts.Step);
        return socket;
    }

    /// <summary>Sends 64 pattern bytes and expects them back within <paramref name="timeout"/>; false when they do not come.</summary>
    private static async Task<bool> TryRoundTripAsync(Socket socket, int index, TimeSpan timeout)
    {
        byte[] data = new byte[64];
        BytePattern.Fill(data, index * 64L);
        await socket.SendAsync(data).WaitAsync(Timeouts.Step);
        return await TryReceiveEchoAsync(socket, index, timeout);
    }

    private static async Task<bool> TryReceiveEchoAsync(Socket socket, int index, TimeSpan timeout)
    {
        byte[] data = new byte[64];
        BytePattern.Fill(data, index * 64L);
        byte[] received = new byte[data.Length];
        int read = 0;
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            while (read < received.Length)
            {
                int n = await socket.ReceiveAsync(received.AsMemory(read), SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    throw new IOException($"The server closed connection {index}.");
                }

                read += n;
            }
        }
        catch (OperationCanceledException) when (read == 0)
        {
            return false;
        }

        Assert.Equal(data, received);
        return true;
    }

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < timeout, $"Timed out after {timeout.TotalSeconds:0} s waiting for {what}.");
            await Task.Delay(50);
        }
    }

    private static TimeSpan CpuTime(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return TimeSpan.FromSeconds(ticks / 100.0);
    }
}
