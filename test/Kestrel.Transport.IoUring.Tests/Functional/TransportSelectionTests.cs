using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>Proves which transport served: io_uring runs must never be a silent fallback to Sockets.</summary>
public class TransportSelectionTests(ITestOutputHelper output)
{
    [SkippableTheory, AllTransports]
    public async Task ServingTransport_ConnectionContextType_IsTheChosenTransport(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, ctx => ctx.Response.WriteAsync("served"), new TestHostOptions { Output = output });

        if (transport == TransportKind.IoUring)
        {
            // IoUringRequirement.Ensure() ran in TestHost.Create: io_uring is supported here, so it must serve.
            Assert.NotNull(host.IoUringFactory);
            Assert.True(host.IoUringFactory.IsUsingIoUring, "UseIoUring() fell back to Sockets although io_uring is supported.");
        }
        else
        {
            Assert.Null(host.IoUringFactory);
        }

        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            Assert.Equal("served", await client.GetStringAsync(host.BaseUri()));
        }

        string type = Assert.Single(host.ConnectionTypes);
        output.WriteLine($"{transport}: {type}");
        Assert.StartsWith(transport.ConnectionTypePrefix(), type, StringComparison.Ordinal);
        await host.StopAndVerifyAsync();
    }
}
