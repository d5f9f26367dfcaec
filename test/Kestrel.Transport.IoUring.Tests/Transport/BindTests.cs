using System.Net;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Transport;

public class BindTests
{
    private static WebApplication Build(string url)
        => IoUringApp.Build(context => context.Response.WriteAsync("first"), url, o => o.ThrowIfUnavailable = true);

    [SkippableFact]
    public async Task Bind_PortHeldByAnotherIoUringServer_FailsWithAddressInUse()
    {
        IoUringRequirement.Ensure();

        // Both servers use SO_REUSEPORT listen sockets; the second must not silently join the first's group.
        await using WebApplication first = Build("http://127.0.0.1:0");
        await first.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        int port = IoUringApp.PortOf(first);

        await using WebApplication second = Build($"http://127.0.0.1:{port}");
        IOException e = await Assert.ThrowsAsync<IOException>(() => second.StartAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Contains("address already in use", e.Message, StringComparison.OrdinalIgnoreCase);

        using var client = new HttpClient();
        Assert.Equal("first", await client.GetStringAsync($"http://127.0.0.1:{port}/").WaitAsync(TimeSpan.FromSeconds(10)));
        await first.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
    }

    [SkippableFact]
    public async Task Bind_SamePortAfterStop_Succeeds()
    {
        IoUringRequirement.Ensure();
        int port;
        await using (WebApplication first = Build("http://127.0.0.1:0"))
        {
            await first.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
            port = IoUringApp.PortOf(first);
            using var client = new HttpClient();
            Assert.Equal("first", await client.GetStringAsync($"http://127.0.0.1:{port}/").WaitAsync(TimeSpan.FromSeconds(10)));
            await first.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        // A restart on the same port works although the last connection may linger in TIME_WAIT.
        await using WebApplication again = Build($"http://127.0.0.1:{port}");
        await again.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        await again.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
    }
}
