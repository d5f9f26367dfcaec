using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Binds <see cref="IoUringTransportOptions"/> from the configuration section <see cref="SectionName"/>
/// (for example appsettings.json or KESTREL__TRANSPORT__IOURING__REACTORCOUNT). Options set in code
/// through UseIoUring(options => ...) run after this, so code wins over configuration.
/// </summary>
internal sealed class IoUringTransportOptionsSetup(IServiceProvider services) : IConfigureOptions<IoUringTransportOptions>
{
    public const string SectionName = "Kestrel:Transport:IoUring";

    public void Configure(IoUringTransportOptions options)
    {
        if (services.GetService(typeof(IConfiguration)) is not IConfiguration configuration)
        {
            return;
        }

        IConfigurationSection section = configuration.GetSection(SectionName);
        if (section.Exists())
        {
            // Source-generated binder (EnableConfigurationBindingGenerator): no reflection, trim- and AOT-safe.
            section.Bind(options);
        }
    }
}
