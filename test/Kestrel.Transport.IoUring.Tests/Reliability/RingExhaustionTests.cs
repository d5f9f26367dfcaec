using System.Diagnostics.Metrics;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>
/// A data storm into rings far too small for it: the provided buffer ring runs dry (ENOBUFS ends each
/// multishot receive) and completions overflow the CQ. Nothing may be lost or stuck, and the transport's
/// own metrics must show that both really happened. io_uring's own machinery, so a fact.
/// </summary>
public class RingExhaustionTests(ITestOutputHelper output)
{
    private const string MeterName = "Kestrel.Transport.IoUring";
    private const string BufferExhaustions = "iouring.ring.buffer_exhaustions";
    private const string CqOverflows = "iouring.ring.cq_overflows";

    [SkippableFact]
    public async Task DataStorm_TinyBufferRingAndCompletionQueue_EveryByteEchoedAndExhaustionCounted()
    {
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, _ => { }, new TestHostOptions
        {
            Output = output,
            ConfigureListen = ScriptedEcho.Use,
            ConfigureIoUring = o =>
            {
                o.ReceiveBufferCount = 4;
                o.ReceiveBufferSize = 1024;
                o.SubmissionQueueEntries = 8;
                o.CompletionQueueEntries = 8;
            },
        });

        const int Connections = 100;
        const long Size = 512 * 1024;
        ScriptedEcho.Outcome[] outcomes = await Task.WhenAll(Enumerable.Range(0, Connections)
            .Select(i => ScriptedEcho.RunClientAsync(host.EndPoint, i, EchoRole.Echo, stopAfter: 0, Size))).WaitAsync(Timeouts.Bulk);

        foreach (ScriptedEcho.Outcome outcome in outcomes)
        {
            Assert.True(outcome.Error is null, $"Connection {outcome.Id}: {outcome.Error}");
            Assert.Equal(Size, outcome.Received);
        }

        Dictionary<string, long> metrics = ReadCounters(host.Services);
        output.WriteLine(string.Join(", ", metrics.Select(kv => $"{kv.Key}={kv.Value}")));
        Assert.True(metrics.GetValueOrDefault(BufferExhaustions) > 0, "The buffer ring never ran dry: the test did not exercise ENOBUFS.");
        Assert.True(metrics.GetValueOrDefault(CqOverflows) > 0, "The completion queue never overflowed: the test did not exercise CQ overflow.");
        await host.StopAndVerifyAsync();
    }

    /// <summary>The transport's observable counters of this host (summed over reactors), read once.</summary>
    private static Dictionary<string, long> ReadCounters(IServiceProvider services)
    {
        var totals = new Dictionary<string, long>(StringComparer.Ordinal);
        IMeterFactory meterFactory = services.GetRequiredService<IMeterFactory>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            // Only this host's meter: other hosts of the test run may still be collecting.
            if (instrument.Meter.Name == MeterName && instrument.Meter.Scope == meterFactory)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            lock (totals)
            {
                totals[instrument.Name] = totals.GetValueOrDefault(instrument.Name) + value;
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return totals;
    }
}
