using System.Globalization;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport.Internal;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Transport;

/// <summary>
/// <see cref="IoUringTransportOptions.UseDirectSend"/>: a flush on a thread-pool thread sends with send(2) itself
/// while the reactor sleeps, and hands whatever the socket does not take back to the ring. Every byte must
/// arrive exactly and in order whichever path carried it, and the counters show both paths were really used.
/// </summary>
public class DirectSendTests(ITestOutputHelper output)
{
    private static (long DirectSends, long DirectBytes, long RingBytes) Totals(TestHost host)
    {
        ReactorGroup group = host.IoUringFactory!.Reactors!;
        long sends = 0, direct = 0, ring = 0;
        for (int i = 0; i < group.Count; i++)
        {
            ReactorStats stats = group.StatsFor(i);
            sends += Interlocked.Read(ref stats.DirectSends);
            direct += Interlocked.Read(ref stats.DirectBytesSent);
            ring += Interlocked.Read(ref stats.BytesSent);
        }

        return (sends, direct, ring);
    }

    private static async Task WritePatternAsync(HttpContext ctx, int length, int chunk)
    {
        ctx.Response.ContentLength = length;
        byte[] block = new byte[chunk];
        for (int offset = 0; offset < length; offset += chunk)
        {
            int count = Math.Min(chunk, length - offset);
            BytePattern.Fill(block.AsSpan(0, count), offset);
            await ctx.Response.BodyWriter.WriteAsync(block.AsMemory(0, count));
        }
    }

    /// <summary>Asks for <paramref name="length"/> pattern bytes on a keep-alive connection and checks every one.</summary>
    private static async Task RequestExactAsync(RawConnection connection, int length)
    {
        await connection.SendAsync($"GET /?n={length} HTTP/1.1\r\nHost: test\r\n\r\n");
        RawResponse response = await connection.ReadResponseAsync();
        Assert.Equal(200, response.StatusCode);
        Assert.Equal(length, response.Body.Length);
        Assert.Equal(-1, BytePattern.FirstMismatch(response.Body, 0));
    }

    private static int RequestedLength(HttpContext ctx) => int.Parse(ctx.Request.Query["n"]!, CultureInfo.InvariantCulture);

    [SkippableFact]
    public async Task KeepAliveRequests_Default_SentDirectlyFromTheFlushingThreadAndExact()
    {
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, ctx => WritePatternAsync(ctx, RequestedLength(ctx), 4096),
            new TestHostOptions { Output = output });
        string started = host.Logs.Records.Single(r => r.EventId.Id == 100).Message;
        Assert.Contains("direct send from flushing threads", started, StringComparison.Ordinal);

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            for (int i = 0; i < 200; i++)
            {
                await RequestExactAsync(connection, i % 7 * 1000 + 1);
            }
        }

        (long sends, long directBytes, long ringBytes) = Totals(host);
        output.WriteLine($"direct sends {sends} ({directBytes} bytes), ring-sent bytes {ringBytes}");
        // One request at a time with an idle thread pool: the reactor is asleep at nearly every flush.
        Assert.True(sends >= 20, $"{sends} direct sends for 200 requests");
        Assert.True(directBytes > 0);
        await host.StopAndVerifyAsync();
    }

    [SkippableFact]
    public async Task LargeResponse_ToAClientThatStopsReading_GoesOnThroughTheRingAndArrivesExact()
    {
        const int Length = 32 * 1024 * 1024;
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, ctx => WritePatternAsync(ctx, Length, 4096),
            new TestHostOptions { Output = output });

        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint, s => s.ReceiveBufferSize = 16 * 1024))
        {
            await connection.SendAsync($"GET /?n={Length} HTTP/1.1\r\nHost: test\r\n\r\n");
            // The socket fills while the client does not read: direct sends come back short or EAGAIN and hand the
            // rest to the ring, which waits for room.
            await Task.Delay(500);
            RawResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal(Length, response.Body.Length);
            Assert.Equal(-1, BytePattern.FirstMismatch(response.Body, 0));
        }

        (long sends, long directBytes, long ringBytes) = Totals(host);
        output.WriteLine($"direct sends {sends} ({directBytes} bytes), ring-sent bytes {ringBytes}");
        Assert.True(sends > 0, "no direct send");
        Assert.True(ringBytes > 0, "nothing went through the ring");
        Assert.True(directBytes + ringBytes > Length, $"{directBytes} + {ringBytes} bytes sent for a {Length}-byte body");
        await host.StopAndVerifyAsync();
    }

    [SkippableFact]
    public async Task ConcurrentConnections_MixedSizes_EveryResponseExact()
    {
        const int Connections = 32;
        const int Requests = 60;
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, ctx => WritePatternAsync(ctx, RequestedLength(ctx), 16 * 1024),
            new TestHostOptions { Output = output });

        async Task ClientAsync(int id)
        {
            await using RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint);
            for (int i = 0; i < Requests; i++)
            {
                // From one byte to 256 KiB: small ones fit one send(2), large ones outgrow the socket buffer.
                await RequestExactAsync(connection, (id * 7919 + i * 104_729) % (256 * 1024) + 1);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Connections).Select(ClientAsync)).WaitAsync(Timeouts.Bulk);
        (long sends, long directBytes, long ringBytes) = Totals(host);
        output.WriteLine($"direct sends {sends} ({directBytes} bytes), ring-sent bytes {ringBytes}");
        Assert.True(sends > 0, "no direct send");
        Assert.True(ringBytes > 0, "nothing went through the ring");
        await host.StopAndVerifyAsync();
    }

    [SkippableFact]
    public async Task UseDirectSendFalse_EverySendGoesThroughTheRing()
    {
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, ctx => WritePatternAsync(ctx, RequestedLength(ctx), 4096),
            new TestHostOptions { Output = output, ConfigureIoUring = o => o.UseDirectSend = false });
        string started = host.Logs.Records.Single(r => r.EventId.Id == 100).Message;
        Assert.Contains("every send through the ring", started, StringComparison.Ordinal);

        long expected = 0;
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            for (int i = 0; i < 100; i++)
            {
                int length = i * 1000 + 1;
                await RequestExactAsync(connection, length);
                expected += length;
            }
        }

        (long sends, long directBytes, long ringBytes) = Totals(host);
        Assert.Equal(0, sends);
        Assert.Equal(0, directBytes);
        Assert.True(ringBytes > expected, $"{ringBytes} bytes through the ring for {expected} bytes of bodies");
        await host.StopAndVerifyAsync();
    }
}
