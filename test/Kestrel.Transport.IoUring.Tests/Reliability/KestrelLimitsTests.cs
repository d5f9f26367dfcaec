using System.Diagnostics;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using BadHttpRequestException = Microsoft.AspNetCore.Http.BadHttpRequestException;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>
/// Kestrel's protections against hostile clients, over each transport. Kestrel checks its timeouts and
/// data rates from a heartbeat about once a second, so the limits here are 1-2 s and every wait is
/// bounded by a few heartbeats.
/// </summary>
public class KestrelLimitsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan s_closeWithin = TimeSpan.FromSeconds(10);

    [SkippableTheory, AllTransports]
    public async Task MaxRequestBodySize_LargerBody_Responds413(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ReadBodyAsync, Options(k => k.Limits.MaxRequestBodySize = 1000));
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await client.SendAsync($"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n{new string('x', 5000)}");
            RawResponse response = await client.ReadResponseAsync();
            Assert.Equal(413, response.StatusCode);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task MaxRequestHeadersTotalSize_HugeHeader_Responds431AndCloses(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("ok"), Options(k => k.Limits.MaxRequestHeadersTotalSize = 4096));
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await client.SendAsync($"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {new string('a', 8192)}\r\n\r\n");
            RawResponse response = await client.ReadResponseAsync();
            Assert.Equal(431, response.StatusCode);
            await AssertClosedAsync(client);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task KeepAliveTimeout_IdleConnection_ClosedByServer(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("ok"), Options(k => k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(1)));
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await client.SendAsync("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).StatusCode);
            var clock = Stopwatch.StartNew();
            await AssertClosedAsync(client);
            output.WriteLine($"{transport}: idle connection closed after {clock.Elapsed.TotalSeconds:0.0} s");
            Assert.True(clock.Elapsed > TimeSpan.FromSeconds(0.9), "Closed before the keep-alive timeout.");
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task RequestHeadersTimeout_SlowHeaders_ConnectionClosed(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("ok"), Options(k => k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(1)));
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint))
        {
            // Part of the headers, then nothing more.
            await client.SendAsync("GET / HTTP/1.1\r\nHost: loc");
            var clock = Stopwatch.StartNew();
            byte[] rest = await ReadUntilClosedAsync(client);
            output.WriteLine($"{transport}: slow headers cut off after {clock.Elapsed.TotalSeconds:0.0} s: {System.Text.Encoding.ASCII.GetString(rest).Split('\r')[0]}");
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task MinRequestBodyDataRate_SlowlorisBody_ConnectionClosed(TransportKind transport)
    {
        var bodyFailed = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            try
            {
                await ctx.Request.Body.CopyToAsync(Stream.Null);
            }
            catch (Exception e)
            {
                bodyFailed.TrySetResult(e);
                throw;
            }
        }, Options(k => k.Limits.MinRequestBodyDataRate = new MinDataRate(bytesPerSecond: 1000, gracePeriod: TimeSpan.FromSeconds(2)), expectAppError: true));
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await client.SendAsync("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n0123456789");
            Exception e = await bodyFailed.Task.WaitAsync(s_closeWithin);
            Assert.IsType<BadHttpRequestException>(e, exactMatch: false);
            await ReadUntilClosedAsync(client);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task MinResponseDataRate_ClientNeverReads_ConnectionAborted(TransportKind transport)
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // What the application got through, for the message if the abort never comes: many more bytes than
        // the socket buffers hold (about 4 MiB) would mean the transport accepted writes it could not send;
        // a write that stopped returning long ago would mean Kestrel's write timeout did not fire.
        long written = 0;
        long lastWrite = Stopwatch.GetTimestamp();
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            ctx.RequestAborted.Register(() => aborted.TrySetResult());
            byte[] chunk = new byte[64 * 1024];
            try
            {
                for (int i = 0; i < 4096 && !ctx.RequestAborted.IsCancellationRequested; i++)
                {
                    await ctx.Response.Body.WriteAsync(chunk, ctx.RequestAborted);
                    Interlocked.Add(ref written, chunk.Length);
                    Interlocked.Exchange(ref lastWrite, Stopwatch.GetTimestamp());
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException)
            {
                // The connection was aborted under the write: what this test waits for.
            }
        }, Options(k => k.Limits.MinResponseDataRate = new MinDataRate(bytesPerSecond: 1_000_000, gracePeriod: TimeSpan.FromSeconds(2))));
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint, s => s.ReceiveBufferSize = 4096))
        {
            await client.SendAsync("GET /large HTTP/1.1\r\nHost: localhost\r\n\r\n");
            // Never read: the kernel buffers fill, the server's writes stall, the rate falls to zero. Kestrel
            // allows each write bytes/rate seconds (at least the grace period), so the rate is high
            // enough here that the megabytes the socket buffers absorb first do not buy minutes.
            var clock = Stopwatch.StartNew();
            if (await Task.WhenAny(aborted.Task, Task.Delay(TimeSpan.FromSeconds(20))) != aborted.Task)
            {
                double idle = Stopwatch.GetElapsedTime(Interlocked.Read(ref lastWrite)).TotalSeconds;
                Assert.Fail($"{transport}: RequestAborted did not fire within 20 s of a client that never reads; the application had written {Interlocked.Read(ref written):N0} bytes, the last write returned {idle:0.0} s ago.");
            }

            // No byte count here: once Kestrel has aborted, writes return at once until RequestAborted's
            // callback runs, so by now the count includes writes that sent nothing.
            output.WriteLine($"{transport}: non-reading client aborted after {clock.Elapsed.TotalSeconds:0.0} s");
            await ReadUntilClosedAsync(client);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task MaxConcurrentConnections_Excess_ClosedWithoutResponseThenAdmittedWhenFree(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("ok"), Options(k => k.Limits.MaxConcurrentConnections = 2, expected: r => r.EventId.Name == "ConnectionRejected"));
        RawConnection first = await RawConnection.ConnectAsync(host.EndPoint);
        await using (RawConnection second = await RawConnection.ConnectAsync(host.EndPoint))
        {
            foreach (RawConnection client in new[] { first, second })
            {
                await client.SendAsync("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                Assert.Equal(200, (await client.ReadResponseAsync()).StatusCode);
            }

            await using (RawConnection excess = await RawConnection.ConnectAsync(host.EndPoint))
            {
                await SendIgnoringResetAsync(excess, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                byte[] got = await ReadUntilClosedAsync(excess);
                Assert.Empty(got);
            }

            await first.DisposeAsync();
            // Kestrel releases the slot when it has finished with the closed connection.
            var clock = Stopwatch.StartNew();
            while (true)
            {
                await using RawConnection again = await RawConnection.ConnectAsync(host.EndPoint);
                await SendIgnoringResetAsync(again, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                byte[] got = await ReadUntilClosedAsync(again, stopAfterAnyByte: true);
                if (got.Length > 0)
                {
                    Assert.StartsWith("HTTP/1.1 200", System.Text.Encoding.ASCII.GetString(got), StringComparison.Ordinal);
                    break;
                }

                Assert.True(clock.Elapsed < s_closeWithin, "A connection slot freed by a close was never reused.");
                await Task.Delay(100);
            }
        }

        await host.StopAndVerifyAsync();
    }

    private TestHostOptions Options(Action<KestrelServerOptions> configure, bool expectAppError = false, Func<LogRecord, bool>? expected = null) => new()
    {
        Output = output,
        ConfigureKestrel = configure,
        // A test whose app rethrows Kestrel's BadHttpRequestException expects Kestrel to log it; Kestrel
        // warns of each connection it rejects over MaxConcurrentConnections.
        ExpectedLog = r => (expectAppError && r.Exception is BadHttpRequestException) || expected?.Invoke(r) == true,
    };

    private static async Task ReadBodyAsync(HttpContext context)
    {
        try
        {
            await context.Request.Body.CopyToAsync(Stream.Null);
            await context.Response.WriteAsync("read");
        }
        catch (BadHttpRequestException e)
        {
            context.Response.StatusCode = e.StatusCode;
        }
    }

    private static async Task SendIgnoringResetAsync(RawConnection client, string text)
    {
        try
        {
            await client.SendAsync(text);
        }
        catch (SocketException)
        {
            // Already closed by the server: the read below sees it.
        }
    }

    /// <summary>Asserts the server closes the connection (FIN or RST) within a few heartbeats, with no more response bytes.</summary>
    private static async Task AssertClosedAsync(RawConnection client)
    {
        byte[] rest = await ReadUntilClosedAsync(client);
        Assert.Empty(rest);
    }

    /// <summary>Reads until FIN or RST (bounded); returns what arrived.</summary>
    private static async Task<byte[]> ReadUntilClosedAsync(RawConnection client, bool stopAfterAnyByte = false)
    {
        var received = new MemoryStream();
        byte[] buffer = new byte[64 * 1024];
        var clock = Stopwatch.StartNew();
        try
        {
            while (true)
            {
                TimeSpan left = s_closeWithin - clock.Elapsed;
                Assert.True(left > TimeSpan.Zero, $"The server did not close the connection within {s_closeWithin.TotalSeconds:0} s.");
                int n = await client.ReceiveAsync(buffer, left);
                if (n == 0)
                {
                    break;
                }

                received.Write(buffer, 0, n);
                if (stopAfterAnyByte)
                {
                    break;
                }
            }
        }
        catch (SocketException)
        {
            // RST: closed too.
        }
        catch (TimeoutException)
        {
            Assert.Fail($"The server did not close the connection within {s_closeWithin.TotalSeconds:0} s.");
        }

        return received.ToArray();
    }
}
