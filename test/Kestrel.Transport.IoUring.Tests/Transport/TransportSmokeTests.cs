using System.Net;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Transport;

public class TransportSmokeTests
{
    private static async Task<(WebApplication App, int Port)> StartAsync(Action<IoUringTransportOptions>? configure = null)
    {
        WebApplication app = IoUringApp.Build(
            async context =>
            {
                if (context.Request.Path == "/echo")
                {
                    using var ms = new MemoryStream();
                    await context.Request.Body.CopyToAsync(ms);
                    await context.Response.Body.WriteAsync(ms.ToArray());
                    return;
                }

                await context.Response.WriteAsync("Hello, World!");
            },
            configure: configure);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        return (app, IoUringApp.PortOf(app));
    }

    [SkippableFact]
    public async Task Get_OverIoUring_ReturnsBody()
    {
        IoUringRequirement.Ensure();
        (WebApplication app, int port) = await StartAsync();
        await using (app)
        {
            using var client = new HttpClient();
            for (int i = 0; i < 20; i++)
            {
                string body = await client.GetStringAsync($"http://127.0.0.1:{port}/").WaitAsync(TimeSpan.FromSeconds(10));
                Assert.Equal("Hello, World!", body);
            }

            byte[] payload = new byte[3_000_000];
            Random.Shared.NextBytes(payload);
            using HttpResponseMessage response = await client.PostAsync($"http://127.0.0.1:{port}/echo", new ByteArrayContent(payload)).WaitAsync(TimeSpan.FromSeconds(30));
            byte[] echoed = await response.Content.ReadAsByteArrayAsync();
            Assert.Equal(payload, echoed);
            await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    [SkippableFact]
    public async Task Pipelined_RawSocket_AllResponsesInOrder()
    {
        IoUringRequirement.Ensure();
        (WebApplication app, int port) = await StartAsync(o => o.UnsafePreferInlineScheduling = true);
        await using (app)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, port);
            var sb = new StringBuilder();
            for (int i = 0; i < 50; i++)
            {
                sb.Append("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            }

            await socket.SendAsync(Encoding.ASCII.GetBytes(sb.ToString()));
            var received = new StringBuilder();
            byte[] buffer = new byte[65536];
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            while (CountOccurrences(received.ToString(), "Hello, World!") < 50)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                Assert.NotEqual(0, n);
                received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }

            await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    private static int CountOccurrences(string s, string value)
    {
        int count = 0, index = 0;
        while ((index = s.IndexOf(value, index, StringComparison.Ordinal)) >= 0)
        {
            count++;
            index += value.Length;
        }

        return count;
    }
}
