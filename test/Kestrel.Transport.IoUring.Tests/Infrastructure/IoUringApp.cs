using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// A bare app on the io_uring transport for the transport-only tests (no leak checks, no Sockets twin:
/// that is TestHost's job). Logging off; options from code and, optionally, configuration.
/// </summary>
public static class IoUringApp
{
    public static WebApplication Build(
        RequestDelegate handler,
        string url = "http://127.0.0.1:0",
        Action<IoUringTransportOptions>? configure = null,
        Dictionary<string, string?>? configuration = null,
        ulong? listenHandle = null)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (configuration is not null)
        {
            builder.Configuration.AddInMemoryCollection(configuration);
        }

        builder.WebHost.UseIoUring(o => configure?.Invoke(o));
        if (listenHandle is { } handle)
        {
            // An already-listening socket handed over (systemd socket activation) instead of url.
            builder.WebHost.ConfigureKestrel(k => k.ListenHandle(handle));
        }
        else
        {
            builder.WebHost.UseUrls(url);
        }
        WebApplication app = builder.Build();
        app.Run(handler);
        return app;
    }

    /// <summary>The port the started app really listens on.</summary>
    public static int PortOf(WebApplication app)
        => new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
}
