using Kestrel.Transport.IoUring;
using Microsoft.AspNetCore.Connections;
using Kestrel.Transport.IoUring.Transport.Internal;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>
/// <see cref="IWebHostBuilder"/> extension methods to use the io_uring transport, next to Kestrel's <c>UseSockets</c>.
/// </summary>
public static class WebHostBuilderIoUringExtensions
{
    /// <summary>
    /// Serves Kestrel's TCP endpoints with the io_uring transport. Where io_uring is unavailable
    /// (not Linux, too old a kernel, blocked by seccomp or sysctl) one warning is logged and the Sockets
    /// transport serves instead. Files sent by the application (StaticFiles, MapStaticAssets, Results.File,
    /// Response.SendFileAsync) are read through the ring unless
    /// <see cref="IoUringTransportOptions.UseRingFileSender"/> is false.
    /// </summary>
    /// <param name="hostBuilder">The web host builder.</param>
    /// <returns>The web host builder.</returns>
    public static IWebHostBuilder UseIoUring(this IWebHostBuilder hostBuilder)
        => hostBuilder.UseIoUring(static _ => { });

    /// <summary>
    /// Serves Kestrel's TCP endpoints with the io_uring transport, configured by <paramref name="configureOptions"/>.
    /// Options are first bound from the configuration section <c>Kestrel:Transport:IoUring</c>, then
    /// <paramref name="configureOptions"/> runs, so code wins over configuration.
    /// </summary>
    /// <param name="hostBuilder">The web host builder.</param>
    /// <param name="configureOptions">Configures <see cref="IoUringTransportOptions"/>.</param>
    /// <returns>The web host builder.</returns>
    public static IWebHostBuilder UseIoUring(this IWebHostBuilder hostBuilder, Action<IoUringTransportOptions> configureOptions)
    {
        ArgumentNullException.ThrowIfNull(hostBuilder);
        ArgumentNullException.ThrowIfNull(configureOptions);
        return hostBuilder.ConfigureServices(services =>
        {
            // Kestrel tries transports last-registered first and asks CanBind, so AddSingleton (not TryAdd)
            // puts this one ahead of the Sockets transport that UseKestrel registered.
            services.AddSingleton<IConnectionListenerFactory, IoUringTransportFactory>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IConfigureOptions<IoUringTransportOptions>, IoUringTransportOptionsSetup>());
            services.Configure(configureOptions);

            // The ring file sender: one per host, its middleware put first by a startup filter.
            services.TryAddSingleton(static sp => new RingFileSender(sp.GetRequiredService<IOptions<IoUringTransportOptions>>().Value));
            services.TryAddEnumerable(ServiceDescriptor.Transient<IStartupFilter, RingFileSenderStartupFilter>(static sp =>
                new RingFileSenderStartupFilter(sp.GetRequiredService<RingFileSender>(), sp.GetRequiredService<IOptions<IoUringTransportOptions>>().Value.UseRingFileSender)));
        });
    }
}
