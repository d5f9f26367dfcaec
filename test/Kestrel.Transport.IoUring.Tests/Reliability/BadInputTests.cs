using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>Malformed and random input: Kestrel's 400 and a close, never a crash, and no stale byte from the receive path.</summary>
public class BadInputTests(ITestOutputHelper output)
{
    public static TheoryData<TransportKind, string, int> MalformedRequests()
    {
        string[] requests =
        [
            "GET / HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",                                       // no Host
            "GET /\0 HTTP/1.1\r\nHost: localhost\r\n\r\n",                 // NUL in the target
            "BREW / HTTP/1.1\r\nHost: localhost\r\n\r\n".Replace("BREW", "B\tEW", StringComparison.Ordinal),
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n",
        ];
        var data = new TheoryData<TransportKind, string, int>();
        foreach (TransportKind transport in Enum.GetValues<TransportKind>())
        {
            for (int i = 0; i < requests.Length; i++)
            {
                data.Add(transport, requests[i], 400);
            }

            data.Add(transport, "GET / HTTP/9.9\r\nHost: localhost\r\n\r\n", 505);
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(MalformedRequests))]
    public async Task MalformedRequest_Responds400AndCloses(TransportKind transport, string request, int expectedStatus)
    {
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            await ctx.Request.Body.CopyToAsync(Stream.Null);
            await ctx.Response.WriteAsync("should not be reached");
        }, new TestHostOptions { Output = output, ExpectedLog = r => r.Exception is BadHttpRequestException });
        await using (RawConnection client = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await client.SendAsync(Encoding.Latin1.GetBytes(request));
            RawResponse response = await client.ReadResponseAsync();
            Assert.Equal(expectedStatus, response.StatusCode);
            Assert.Equal(0, await client.ReceiveAsync(new byte[16]));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task RandomGarbage_HundredsOfBlobs_ServerStillServes(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("alive"), new TestHostOptions { Output = output });
        var random = new Random(1337);
        var blobs = Enumerable.Range(0, 300).Select(i =>
        {
            byte[] blob = new byte[random.Next(1, 8192)];
            random.NextBytes(blob);
            // Some start like a request, so the parser gets past the request line before the garbage.
            if (i % 3 == 0)
            {
                Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\n").CopyTo(blob.AsSpan(0, Math.Min(16, blob.Length)));
            }

            return (Blob: blob, End: random.Next(3));
        }).ToList();

        foreach (var batch in blobs.Chunk(30))
        {
            await Task.WhenAll(batch.Select(async item =>
            {
                await using RawConnection client = await RawConnection.ConnectAsync(host.EndPoint);
                try
                {
                    await client.SendAsync(item.Blob);
                    switch (item.End)
                    {
                        case 0:
                            client.Reset();
                            return;
                        case 1:
                            client.ShutdownSend();
                            break;
                    }

                    // Whatever comes back (a 400, or nothing), the server must end the conversation or
                    // still be waiting for more: never hang the client past a short read.
                    await client.ReceiveAsync(new byte[4096], TimeSpan.FromSeconds(2));
                }
                catch (Exception e) when (e is SocketException or TimeoutException or ObjectDisposedException)
                {
                    // Reset by the server after a 400, or still waiting for the rest of a request.
                }
            })).WaitAsync(Timeouts.Bulk);
        }

        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            Assert.Equal("alive", await client.GetStringAsync(host.BaseUri()));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task EchoedBodies_VaryingLengthsInterleaved_NoStaleByteEverAppears(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body);
            ctx.Response.ContentLength = body.Length;
            await ctx.Response.Body.WriteAsync(body.GetBuffer().AsMemory(0, (int)body.Length));
        }, new TestHostOptions
        {
            Output = output,
            // Few, small provided buffers: each is recycled thousands of times during the test.
            ConfigureIoUring = o =>
            {
                o.ReceiveBufferCount = 8;
                o.ReceiveBufferSize = 512;
            },
        });

        const int Connections = 16;
        const int RequestsPerConnection = 150;
        await Task.WhenAll(Enumerable.Range(0, Connections).Select(async c =>
        {
            var random = new Random(c);
            await using RawConnection client = await RawConnection.ConnectAsync(host.EndPoint);
            for (int r = 0; r < RequestsPerConnection; r++)
            {
                // Long then short: a stale tail of the previous, longer request would show up past the
                // short body's end. Every request's body is one byte value nobody else uses nearby.
                int length = r % 2 == 0 ? random.Next(2000, 6000) : random.Next(1, 40);
                byte fill = (byte)(1 + ((c * RequestsPerConnection + r) % 251));
                byte[] head = Encoding.ASCII.GetBytes($"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n");
                byte[] request = new byte[head.Length + length];
                head.CopyTo(request, 0);
                request.AsSpan(head.Length).Fill(fill);
                await client.SendAsync(request);
                RawResponse response = await client.ReadResponseAsync();
                Assert.Equal(200, response.StatusCode);
                Assert.Equal(length, response.Body.Length);
                int stale = response.Body.AsSpan().IndexOfAnyExcept(fill);
                Assert.True(stale < 0, $"Connection {c} request {r}: body byte {stale} is 0x{response.Body[Math.Max(stale, 0)]:x2}, not the 0x{fill:x2} sent.");
            }
        })).WaitAsync(Timeouts.Bulk);

        await host.StopAndVerifyAsync();
    }
}
