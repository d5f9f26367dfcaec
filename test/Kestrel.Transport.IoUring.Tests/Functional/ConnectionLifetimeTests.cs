using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>How connections end: client FIN and RST, server abort and close, graceful shutdown.</summary>
public class ConnectionLifetimeTests(ITestOutputHelper output)
{
    private const string PartialPost = "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n0123456789";

    [SkippableTheory, AllTransports]
    public async Task ClientFin_MidRequest_FiresRequestAborted(TransportKind transport)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            using CancellationTokenRegistration registration = ctx.RequestAborted.Register(aborted.SetResult);
            started.SetResult();
            await aborted.Task.WaitAsync(Timeouts.Step);
        }, new TestHostOptions { Output = output });

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync(PartialPost);
            await started.Task.WaitAsync(Timeouts.Step);
            connection.ShutdownSend();
            await aborted.Task.WaitAsync(Timeouts.Step);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task ClientReset_MidRequest_AbortsRequestAndLogsNothingAboveDebug(TransportKind transport)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var readFailure = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            using CancellationTokenRegistration registration = ctx.RequestAborted.Register(aborted.SetResult);
            started.SetResult();
            try
            {
                byte[] buffer = new byte[4096];
                while (await ctx.Request.Body.ReadAsync(buffer) != 0)
                {
                }

                readFailure.SetResult(null);
            }
            catch (Exception ex)
            {
                readFailure.SetResult(ex);
            }

            // The read fails as soon as the transport completes its input; RequestAborted follows when
            // Kestrel handles ConnectionClosed. Stay registered until then.
            await aborted.Task.WaitAsync(Timeouts.Step);
        }, new TestHostOptions { Output = output });

        long mark;
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync(PartialPost);
            await started.Task.WaitAsync(Timeouts.Step);
            mark = host.Logs.Mark();
            connection.Reset();
        }

        Exception? failure = await readFailure.Task.WaitAsync(Timeouts.Step);
        // ECONNRESET must surface as ConnectionResetException (an IOException), which Kestrel logs at Debug.
        Assert.IsType<ConnectionResetException>(failure);
        await aborted.Task.WaitAsync(Timeouts.Step);
        await host.StopAndVerifyAsync();
        host.AssertNothingAboveDebugSince(mark);
    }

    [SkippableTheory, AllTransports]
    public async Task ClientReset_MidResponse_AbortsRequestAndLogsNothingAboveDebug(TransportKind transport)
    {
        var appDone = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            using CancellationTokenRegistration registration = ctx.RequestAborted.Register(aborted.SetResult);
            try
            {
                // Once Kestrel has aborted its output, writes complete at once without sending: a finite
                // Content-Length would let this loop "write" all of it, and the app end (disposing the
                // registration) before RequestAborted is delivered. The deadline only bounds a regression.
                ctx.Response.ContentLength = long.MaxValue;
                byte[] chunk = new byte[64 * 1024];
                long deadline = Environment.TickCount64 + (long)(2 * Timeouts.Step).TotalMilliseconds;
                while (Environment.TickCount64 < deadline)
                {
                    await ctx.Response.Body.WriteAsync(chunk, ctx.RequestAborted);
                }

                throw new TimeoutException("RequestAborted never canceled the writes.");
            }
            catch (Exception ex)
            {
                appDone.SetResult(ex);
            }
        }, new TestHostOptions { Output = output });

        long mark;
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            await connection.ReadExactlyAsync(256 * 1024);
            mark = host.Logs.Mark();
            connection.Reset();
        }

        await aborted.Task.WaitAsync(Timeouts.Step);
        Exception? failure = await appDone.Task.WaitAsync(Timeouts.Step);
        Assert.True(failure is OperationCanceledException or IOException, $"Writing after the reset should be canceled, but threw {failure}");
        await host.StopAndVerifyAsync();
        host.AssertNothingAboveDebugSince(mark);
    }

    // io_uring only, a guarantee of this transport's own: once a send fails because the peer reset, the
    // application's writes start completing only after ConnectionClosed fired, so Kestrel has aborted
    // the request before a write loop can spin on completed writes. (The Sockets transport does not
    // promise it: run against Sockets, this test failed at the 11th to 15th connection in 3 of 3 runs.)
    [SkippableFact]
    public async Task PeerReset_WhileAppWrites_ConnectionClosedFiredBeforeWritesComplete()
    {
        var observations = Channel.CreateUnbounded<bool>();
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, _ => { }, new TestHostOptions
        {
            Output = output,
            ConfigureListen = listen => listen.Use(_ => async connection =>
            {
                byte[] chunk = new byte[64 * 1024];
                while (true)
                {
                    FlushResult result = await connection.Transport.Output.WriteAsync(chunk);
                    if (result.IsCompleted || result.IsCanceled)
                    {
                        observations.Writer.TryWrite(connection.ConnectionClosed.IsCancellationRequested);
                        return;
                    }
                }
            }),
        });

        const int Connections = 20;
        for (int i = 0; i < Connections; i++)
        {
            await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
            {
                await connection.ReadExactlyAsync(256 * 1024);
                connection.Reset();
            }

            Assert.True(await observations.Reader.ReadAsync().AsTask().WaitAsync(Timeouts.Step), $"Connection {i}: a write completed before ConnectionClosed fired.");
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task Abort_ByApplication_ClientSeesReset(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx =>
        {
            ctx.Abort();
            return Task.CompletedTask;
        }, new TestHostOptions { Output = output });

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            SocketException reset = await Assert.ThrowsAsync<SocketException>(() => connection.ReceiveAsync(new byte[1024]));
            Assert.Equal(SocketError.ConnectionReset, reset.SocketErrorCode);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task ConnectionClose_ResponseHeader_ClientSeesFinAfterResponse(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx =>
        {
            ctx.Response.Headers.Connection = "close";
            return ctx.Response.WriteAsync("bye");
        }, new TestHostOptions { Output = output });

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            RawResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal("close", response.Header("Connection"));
            Assert.Equal("bye", response.BodyText);
            Assert.Equal(0, await connection.ReceiveAsync(new byte[1024]));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StopAsync_RequestInFlight_RequestCompletesBeforeShutdownEnds(TransportKind transport)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            started.SetResult();
            await release.Task.WaitAsync(Timeouts.Step);
            await ctx.Response.WriteAsync("finished during shutdown");
        }, new TestHostOptions { Output = output });

        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping.Register(stopping.SetResult);

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            await started.Task.WaitAsync(Timeouts.Step);

            Task stop = host.StopAsync();
            await stopping.Task.WaitAsync(Timeouts.Step);
            await Task.Delay(500);
            Assert.False(stop.IsCompleted, "Shutdown should wait for the in-flight request.");

            release.SetResult();
            RawResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal("finished during shutdown", response.BodyText);
            await stop.WaitAsync(Timeouts.Step);
        }

        await host.StopAndVerifyAsync();
    }
}
