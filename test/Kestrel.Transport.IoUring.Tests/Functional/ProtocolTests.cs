using System.Diagnostics;
using System.Net;
using System.Net.WebSockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>Protocols layered on the transport's byte stream: TLS, HTTP/2 (ALPN and h2c), WebSockets.</summary>
public class ProtocolTests(ITestOutputHelper output)
{
    private const int TlsBodyLength = 4 * 1024 * 1024 + 3;

    private static async Task EchoPattern(HttpContext ctx)
    {
        ctx.Response.Headers["X-Protocol"] = ctx.Request.Protocol;
        ctx.Response.Headers["X-Https"] = ctx.Request.IsHttps.ToString();
        long length = ctx.Request.Method == HttpMethods.Post ? await BytePattern.VerifyAsync(ctx.Request.Body) : TlsBodyLength;
        ctx.Response.ContentLength = length;
        await BytePattern.WriteAsync(ctx.Response.Body, length);
    }

    private static Action<ListenOptions> Https(HttpProtocols protocols) => listen =>
    {
        listen.Protocols = protocols;
        listen.UseHttps(new HttpsConnectionAdapterOptions { ServerCertificate = TestCertificate.Certificate });
    };

    [SkippableTheory, AllTransports]
    public async Task Https_Http11_LargeBodiesBothWaysIntact(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, EchoPattern, new TestHostOptions { ConfigureListen = Https(HttpProtocols.Http1), Output = output });

        using (var client = new HttpClient(TestCertificate.CreateTrustingHandler()) { Timeout = Timeouts.Bulk })
        {
            using HttpResponseMessage response = await client.PostAsync(host.BaseUri(https: true), new PatternContent(TlsBodyLength));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("True", response.Headers.GetValues("X-Https").Single());
            Assert.Equal("HTTP/1.1", response.Headers.GetValues("X-Protocol").Single());
            await using Stream body = await response.Content.ReadAsStreamAsync();
            Assert.Equal(TlsBodyLength, await BytePattern.VerifyAsync(body).WaitAsync(Timeouts.Bulk));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task Https_Http2ViaAlpn_ConcurrentStreamsOnOneConnection(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, EchoPattern, new TestHostOptions { ConfigureListen = Https(HttpProtocols.Http1AndHttp2), Output = output });

        using (var client = new HttpClient(TestCertificate.CreateTrustingHandler())
        {
            Timeout = Timeouts.Bulk,
        })
        {
            // One request first, so the connection exists before the concurrent ones share it.
            await AssertHttp2PatternAsync(client, host.BaseUri(https: true), post: false);
            await Task.WhenAll(Enumerable.Range(0, 20).Select(i => AssertHttp2PatternAsync(client, host.BaseUri(https: true), post: i % 2 == 0)));
        }

        Assert.Single(host.ConnectionTypes);
        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task H2c_PriorKnowledge_ServedAsHttp2(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, EchoPattern, new TestHostOptions { ConfigureListen = l => l.Protocols = HttpProtocols.Http2, Output = output });

        using (var client = new HttpClient
        {
            Timeout = Timeouts.Bulk,
        })
        {
            await AssertHttp2PatternAsync(client, host.BaseUri(), post: false);
            await Task.WhenAll(Enumerable.Range(0, 10).Select(i => AssertHttp2PatternAsync(client, host.BaseUri(), post: i % 2 == 0)));
        }

        // curl's own HTTP/2 stack (nghttp2) as a second, independent client.
        if (FindOnPath("curl") is { } curl)
        {
            var start = new ProcessStartInfo(curl, ["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", host.BaseUri().ToString()])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using Process process = Process.Start(start)!;
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync().WaitAsync(Timeouts.Step);
            Assert.True(process.ExitCode == 0, $"curl failed ({process.ExitCode}): {await stderr}");
            Assert.Equal($"2 200 {TlsBodyLength}", await stdout);
        }
        else
        {
            output.WriteLine("curl is not installed: only HttpClient checked h2c.");
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task WebSocket_Echo_MessagesIncludingLargeFragmentedOneRoundTrip(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, app =>
        {
            app.UseWebSockets();
            app.Run(async ctx =>
            {
                if (!ctx.WebSockets.IsWebSocketRequest)
                {
                    ctx.Response.StatusCode = 400;
                    return;
                }

                using WebSocket socket = await ctx.WebSockets.AcceptWebSocketAsync();
                byte[] buffer = new byte[16 * 1024];
                while (true)
                {
                    WebSocketReceiveResult received = await socket.ReceiveAsync(buffer, ctx.RequestAborted);
                    if (received.MessageType == WebSocketMessageType.Close)
                    {
                        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", ctx.RequestAborted);
                        return;
                    }

                    await socket.SendAsync(buffer.AsMemory(0, received.Count), received.MessageType, received.EndOfMessage, ctx.RequestAborted);
                }
            });
        }, new TestHostOptions { Output = output });

        using (var client = new ClientWebSocket())
        {
            var uri = new UriBuilder(host.BaseUri()) { Scheme = "ws" }.Uri;
            await client.ConnectAsync(uri, CancellationToken.None).WaitAsync(Timeouts.Step);

            await RoundTripAsync(client, "hello"u8.ToArray(), WebSocketMessageType.Text, fragments: 1);
            await RoundTripAsync(client, [1, 2, 3, 4, 5], WebSocketMessageType.Binary, fragments: 1);
            byte[] large = new byte[1024 * 1024 + 5];
            BytePattern.Fill(large, 0);
            await RoundTripAsync(client, large, WebSocketMessageType.Binary, fragments: 17);
            await RoundTripAsync(client, "after the large one"u8.ToArray(), WebSocketMessageType.Text, fragments: 3);

            await client.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None).WaitAsync(Timeouts.Step);
            Assert.Equal(WebSocketCloseStatus.NormalClosure, client.CloseStatus);
        }

        await host.StopAndVerifyAsync();
    }

    private static async Task RoundTripAsync(ClientWebSocket client, byte[] message, WebSocketMessageType type, int fragments)
    {
        int fragmentSize = (message.Length + fragments - 1) / fragments;
        for (int offset = 0; offset < message.Length; offset += fragmentSize)
        {
            int n = Math.Min(fragmentSize, message.Length - offset);
            await client.SendAsync(message.AsMemory(offset, n), type, endOfMessage: offset + n == message.Length, CancellationToken.None).AsTask().WaitAsync(Timeouts.Step);
        }

        byte[] received = new byte[message.Length + 1];
        int total = 0;
        while (true)
        {
            ValueWebSocketReceiveResult result = await client.ReceiveAsync(received.AsMemory(total), CancellationToken.None).AsTask().WaitAsync(Timeouts.Step);
            Assert.Equal(type, result.MessageType);
            total += result.Count;
            if (result.EndOfMessage)
            {
                break;
            }
        }

        Assert.Equal(message.Length, total);
        Assert.True(message.AsSpan().SequenceEqual(received.AsSpan(0, total)), "The echoed message differs.");
    }

    private static async Task AssertHttp2PatternAsync(HttpClient client, Uri uri, bool post)
    {
        using var request = new HttpRequestMessage(post ? HttpMethod.Post : HttpMethod.Get, uri)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        if (post)
        {
            request.Content = new PatternContent(TlsBodyLength);
        }

        using HttpResponseMessage response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).WaitAsync(Timeouts.Bulk);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal("HTTP/2", response.Headers.GetValues("X-Protocol").Single());
        await using Stream body = await response.Content.ReadAsStreamAsync();
        Assert.Equal(TlsBodyLength, await BytePattern.VerifyAsync(body).WaitAsync(Timeouts.Bulk));
    }

    private static string? FindOnPath(string name)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, name))
            .FirstOrDefault(File.Exists);
}
