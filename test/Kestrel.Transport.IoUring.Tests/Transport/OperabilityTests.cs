using System.Diagnostics.Metrics;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Tests.Transport;

public class OperabilityTests
{
    private static WebApplication Build(Dictionary<string, string?>? config = null, Action<IoUringTransportOptions>? configure = null)
        => IoUringApp.Build(
            context =>
            {
                context.Response.ContentLength = "metrics".Length;
                return context.Response.WriteAsync("metrics");
            },
            configure: configure,
            configuration: config);

    [Fact]
    public void Options_FromConfigurationSection_AreBoundAndCodeWins()
    {
        using WebApplication app = Build(
            new()
            {
                ["Kestrel:Transport:IoUring:ReactorCount"] = "3",
                ["Kestrel:Transport:IoUring:Backlog"] = "77",
                ["Kestrel:Transport:IoUring:UnsafePreferInlineScheduling"] = "true",
                ["Kestrel:Transport:IoUring:MaxWriteBufferSize"] = "12345",
            },
            o => o.Backlog = 99);
        IoUringTransportOptions options = app.Services.GetRequiredService<IOptions<IoUringTransportOptions>>().Value;
        Assert.Equal(3, options.ReactorCount);
        Assert.True(options.UnsafePreferInlineScheduling);
        Assert.Equal(12345, options.MaxWriteBufferSize);
        Assert.Equal(99, options.Backlog); // code runs after configuration
    }

    [Fact]
    public async Task Options_InvalidValue_FailsStartupNamingSettingValueAndRange()
    {
        // Kestrel resolves the transports while the app is built or started; either must fail.
        Exception e = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using WebApplication app = Build(new() { ["Kestrel:Transport:IoUring:ReceiveBufferCount"] = "1000" });
            await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        });
        string message = e.ToString();
        Assert.Contains("IoUringTransportOptions.ReceiveBufferCount", message, StringComparison.Ordinal);
        Assert.Contains("Kestrel:Transport:IoUring:ReceiveBufferCount", message, StringComparison.Ordinal);
        Assert.Contains("1000", message, StringComparison.Ordinal);
        Assert.Contains("power of two", message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task Metrics_AfterRequests_ReportConnectionsBytesAndRingActivity()
    {
        IoUringRequirement.Ensure();
        await using WebApplication app = Build(configure: o => o.ReactorCount = 2);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
        int port = IoUringApp.PortOf(app);

        var totals = new Dictionary<string, long>();
        using var listener = new MeterListener();

        // Only this host's meter: tests in other classes run hosts of their own at the same time.
        IMeterFactory meterFactory = app.Services.GetRequiredService<IMeterFactory>();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "Kestrel.Transport.IoUring" && ReferenceEquals(instrument.Meter.Scope, meterFactory))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, state) =>
        {
            lock (totals)
            {
                totals[instrument.Name] = totals.GetValueOrDefault(instrument.Name) + value;
            }
        });
        listener.Start();

        const int Requests = 5;
        byte[] request = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        using (var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await socket.ConnectAsync("127.0.0.1", port);
            byte[] buffer = new byte[4096];
            for (int i = 0; i < Requests; i++)
            {
                await socket.SendAsync(request);
                var response = new StringBuilder();
                while (!response.ToString().EndsWith("metrics", StringComparison.Ordinal))
                {
                    int n = await socket.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
                    Assert.NotEqual(0, n);
                    response.Append(Encoding.ASCII.GetString(buffer, 0, n));
                }
            }

            listener.RecordObservableInstruments();
            Assert.Equal(1, totals["iouring.transport.active_connections"]);
        }

        totals.Clear();
        listener.RecordObservableInstruments();
        Assert.Equal(1, totals["iouring.transport.accepted_connections"]);
        Assert.Equal(Requests * request.Length, totals["iouring.transport.received_bytes"]);
        Assert.True(totals["iouring.transport.sent_bytes"] > Requests * "metrics".Length);
        Assert.True(totals["iouring.ring.enter_calls"] > 0);
        Assert.True(totals["iouring.ring.submissions"] > 0);
        Assert.True(totals["iouring.ring.completions"] > 0);
        Assert.Equal(0, totals["iouring.ring.cq_overflows"]);
        Assert.Equal(0, totals["iouring.transport.fallbacks"]);
        await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
    }
}
