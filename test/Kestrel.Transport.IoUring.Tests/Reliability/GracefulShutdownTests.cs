using System.Diagnostics;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>Stopping a server with thousands of requests in flight is bounded by the shutdown timeout and leaves nothing behind.</summary>
public class GracefulShutdownTests(ITestOutputHelper output)
{
    private const int Connections = 2000;
    private static readonly TimeSpan s_shutdownTimeout = TimeSpan.FromSeconds(3);

    [SkippableTheory, AllTransports]
    public async Task StopAsync_2000RequestsWaitingInHandlers_FinishesWithinShutdownTimeoutAndFdsReturn(TransportKind transport)
    {
        int started = 0;
        int ended = 0;
        var allStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async context =>
        {
            if (Interlocked.Increment(ref started) == Connections)
            {
                allStarted.TrySetResult();
            }

            try
            {
                // Waits until Kestrel gives up on graceful shutdown and aborts the connection.
                await Task.Delay(Timeout.InfiniteTimeSpan, context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                Interlocked.Increment(ref ended);
            }
        }, new TestHostOptions
        {
            Output = output,
            ShutdownTimeout = s_shutdownTimeout,
            ConfigureKestrel = k => k.Limits.MaxConcurrentConnections = null,
        });

        var clients = new List<RawConnection>(Connections);
        try
        {
            using (var gate = new SemaphoreSlim(200))
            {
                await Task.WhenAll(Enumerable.Range(0, Connections).Select(async _ =>
                {
                    await gate.WaitAsync();
                    try
                    {
                        RawConnection client = await RawConnection.ConnectAsync(host.EndPoint);
                        lock (clients)
                        {
                            clients.Add(client);
                        }

                        await client.SendAsync("GET /wait HTTP/1.1\r\nHost: localhost\r\n\r\n");
                    }
                    finally
                    {
                        gate.Release();
                    }
                })).WaitAsync(Timeouts.Bulk);
            }

            await allStarted.Task.WaitAsync(Timeouts.Bulk);
            var clock = Stopwatch.StartNew();
            await host.StopAsync();
            clock.Stop();
            output.WriteLine($"{transport}: stopped in {clock.Elapsed.TotalSeconds:0.00} s with {Connections} requests in flight (shutdown timeout {s_shutdownTimeout.TotalSeconds:0} s); {ended} handlers saw RequestAborted.");
            // Kestrel waits the shutdown timeout, then aborts what is left and waits at most 1 s more.
            Assert.True(clock.Elapsed < s_shutdownTimeout + TimeSpan.FromSeconds(2.5), $"Stopping took {clock.Elapsed.TotalSeconds:0.00} s, more than the shutdown timeout ({s_shutdownTimeout.TotalSeconds:0} s) plus Kestrel's abort allowance.");
            Assert.Equal(Connections, Volatile.Read(ref ended));

            // Every client sees its connection end.
            await Task.WhenAll(clients.Select(async c =>
            {
                try
                {
                    while (await c.ReceiveAsync(new byte[1024]) != 0)
                    {
                    }
                }
                catch (System.Net.Sockets.SocketException)
                {
                    // A reset is an end too.
                }
            })).WaitAsync(Timeouts.Bulk);
        }
        finally
        {
            foreach (RawConnection client in clients)
            {
                await client.DisposeAsync();
            }
        }

        // The fd check: back to what the process had before the host started.
        await host.StopAndVerifyAsync();
    }
}
