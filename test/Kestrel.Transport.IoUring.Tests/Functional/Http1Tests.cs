using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>HTTP/1.1 framing and flow control over each transport.</summary>
public class Http1Tests(ITestOutputHelper output)
{
    private const long HundredMegabytes = 100L * 1024 * 1024;

    private TestHostOptions Options(Action<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>? configureKestrel = null)
        => new() { Output = output, ConfigureKestrel = configureKestrel };

    [SkippableTheory, AllTransports]
    public async Task KeepAlive_ManySequentialRequests_ServedOnOneConnection(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("hello " + ctx.Request.Path), Options());

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            for (int i = 0; i < 200; i++)
            {
                await connection.SendAsync($"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n");
                RawResponse response = await connection.ReadResponseAsync();
                Assert.Equal(200, response.StatusCode);
                Assert.Equal($"hello /{i}", response.BodyText);
            }
        }

        Assert.Single(host.ConnectionTypes);
        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task Pipelining_HundredRequestsInOneWrite_AllAnsweredInOrder(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx =>
        {
            byte[] body = Encoding.ASCII.GetBytes("response to " + ctx.Request.Path);
            ctx.Response.ContentLength = body.Length;
            return ctx.Response.Body.WriteAsync(body).AsTask();
        }, Options());

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            var requests = new StringBuilder();
            for (int i = 0; i < 100; i++)
            {
                requests.Append($"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n");
            }

            await connection.SendAsync(requests.ToString());
            for (int i = 0; i < 100; i++)
            {
                RawResponse response = await connection.ReadResponseAsync();
                Assert.Equal(200, response.StatusCode);
                Assert.Equal($"response to /{i}", response.BodyText);
            }
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task RequestBody_HundredMegabytes_ReceivedIntact(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            long received = await BytePattern.VerifyAsync(ctx.Request.Body);
            await ctx.Response.WriteAsync(received.ToString());
        }, Options(k => k.Limits.MaxRequestBodySize = null));

        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            using HttpResponseMessage response = await client.PostAsync(host.BaseUri(), new PatternContent(HundredMegabytes));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HundredMegabytes.ToString(), await response.Content.ReadAsStringAsync());
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task ResponseBody_HundredMegabytes_ReceivedIntact(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx =>
        {
            ctx.Response.ContentLength = HundredMegabytes;
            return BytePattern.WriteAsync(ctx.Response.Body, HundredMegabytes);
        }, Options());

        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            using HttpResponseMessage response = await client.GetAsync(host.BaseUri(), HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await using Stream body = await response.Content.ReadAsStreamAsync();
            Assert.Equal(HundredMegabytes, await BytePattern.VerifyAsync(body).WaitAsync(Timeouts.Bulk));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task Chunked_RequestAndResponse_BodiesIntact(TransportKind transport)
    {
        const int Length = 3 * 1024 * 1024 + 17;
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            ctx.Response.Headers["X-Request-Framing"] = ctx.Request.ContentLength is null ? ctx.Request.Headers.TransferEncoding.ToString() : "content-length";
            long received = await BytePattern.VerifyAsync(ctx.Request.Body);

            // No Content-Length and several flushes: Kestrel answers chunked.
            await BytePattern.WriteAsync(ctx.Response.Body, received, chunkSize: 8191);
        }, Options());

        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, host.BaseUri()) { Content = new PatternContent(Length, chunked: true) };
            request.Headers.TransferEncodingChunked = true;
            using HttpResponseMessage response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("chunked", response.Headers.GetValues("X-Request-Framing").Single());
            Assert.True(response.Headers.TransferEncodingChunked);
            await using Stream body = await response.Content.ReadAsStreamAsync();
            Assert.Equal(Length, await BytePattern.VerifyAsync(body).WaitAsync(Timeouts.Bulk));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task ExpectContinue_ClientWaitsForInterimResponse_BodyThenAccepted(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            using var reader = new StreamReader(ctx.Request.Body);
            await ctx.Response.WriteAsync("got " + await reader.ReadToEndAsync());
        }, Options());

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
            RawResponse interim = await connection.ReadResponseAsync();
            Assert.Equal(100, interim.StatusCode);

            await connection.SendAsync("hello world");
            RawResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal("got hello world", response.BodyText);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task SlowReadingClient_LargeResponse_ServerWriteWaitsAndMemoryStaysBounded(TransportKind transport)
    {
        const long Length = 64L * 1024 * 1024;
        const int Chunk = 64 * 1024;
        long written = 0;
        Task? currentWrite = null;
        var appDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            try
            {
                ctx.Response.ContentLength = Length;
                byte[] buffer = new byte[Chunk];
                for (long offset = 0; offset < Length; offset += Chunk)
                {
                    BytePattern.Fill(buffer, offset);
                    Task write = ctx.Response.Body.WriteAsync(buffer, ctx.RequestAborted).AsTask();
                    Volatile.Write(ref currentWrite, write);
                    await write;
                    Interlocked.Add(ref written, Chunk);
                }

                appDone.SetResult();
            }
            catch (Exception ex)
            {
                appDone.SetException(ex);
            }
        }, Options());

        // A small receive buffer set before connect fixes the TCP window, so the kernel cannot absorb the response.
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint, s => s.ReceiveBufferSize = 16 * 1024))
        {
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            Assert.Equal("HTTP/1.1 200 OK", await connection.ReadLineAsync());
            while (!string.IsNullOrEmpty(await connection.ReadLineAsync()))
            {
            }

            // Stop reading until the server has made no progress for a second.
            long last = -1;
            DateTime deadline = DateTime.UtcNow + Timeouts.Step;
            while (Interlocked.Read(ref written) != last)
            {
                Assert.True(DateTime.UtcNow < deadline, "The server never stopped writing to a client that does not read.");
                last = Interlocked.Read(ref written);
                await Task.Delay(1000);
            }

            long stalledAt = Interlocked.Read(ref written);
            long outstandingBlocks = host.Pool.Outstanding;
            output.WriteLine($"Stalled after {stalledAt} bytes with {outstandingBlocks} pool blocks outstanding (peak {host.Pool.PeakOutstanding}).");
            Assert.False(Volatile.Read(ref currentWrite)!.IsCompleted, "The app's WriteAsync should be waiting for the client.");
            Assert.InRange(stalledAt, 0, 16L * 1024 * 1024);
            Assert.InRange(outstandingBlocks, 0, 256);

            // Now read everything and check it.
            byte[] buffer = new byte[64 * 1024];
            long received = 0;
            while (received < Length)
            {
                int n = await connection.ReceiveAsync(buffer);
                Assert.NotEqual(0, n);
                Assert.Equal(-1, BytePattern.FirstMismatch(buffer.AsSpan(0, n), received));
                received += n;
            }
        }

        await appDone.Task.WaitAsync(Timeouts.Step);
        Assert.InRange(host.Pool.PeakOutstanding, 0, 256);
        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task SlowWritingClient_BodyInSmallDelayedPieces_AppReceivesAll(TransportKind transport)
    {
        const int Pieces = 50;
        const int PieceSize = 100;
        int reads = 0;
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            byte[] buffer = new byte[4096];
            long total = 0;
            int n;
            while ((n = await ctx.Request.Body.ReadAsync(buffer)) != 0)
            {
                if (BytePattern.FirstMismatch(buffer.AsSpan(0, n), total) >= 0)
                {
                    ctx.Response.StatusCode = 400;
                    return;
                }

                total += n;
                reads++;
            }

            await ctx.Response.WriteAsync(total.ToString());
        }, Options());

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint, s => s.NoDelay = true))
        {
            await connection.SendAsync($"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {Pieces * PieceSize}\r\n\r\n");
            byte[] piece = new byte[PieceSize];
            for (int i = 0; i < Pieces; i++)
            {
                BytePattern.Fill(piece, i * PieceSize);
                await connection.SendAsync(piece);
                await Task.Delay(20);
            }

            RawResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal((Pieces * PieceSize).ToString(), response.BodyText);
        }

        output.WriteLine($"The app needed {reads} reads.");
        Assert.True(reads > 1, "The body should have arrived in several pieces.");
        await host.StopAndVerifyAsync();
    }
}
