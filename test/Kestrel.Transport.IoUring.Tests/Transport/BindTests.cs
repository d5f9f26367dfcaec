using System.Net;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Transport;

public class BindTests
{
    private static WebApplication Build(string url)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseIoUring(o => o.ThrowIfUnavailable = true);
        builder.WebHost.UseUrls(url);
        WebApplication app = builder.Build();
        app.Run(context => context.Response.WriteAsync("first"));
        return app;
    }

    [SkippableFact]
    public async Task Bind_PortHeldByAnotherIoUringServer_FailsWithAddressInUse()
    {
        IoUringRequirement.Ensure();

        // Both servers use SO_REUSEPORT listen sockets; the second must not silently join the first's group.
        await using WebApplication first = Build("http://127.0.0.1:0");
        await first.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        int port = new Uri(first.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;

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
            port = new Uri(first.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
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
