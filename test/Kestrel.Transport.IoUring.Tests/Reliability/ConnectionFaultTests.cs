using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>Faults on some connections end those connections only; every other byte still arrives intact.</summary>
public class ConnectionFaultTests(ITestOutputHelper output)
{
    [SkippableTheory, AllTransports]
    public async Task HandlerThrows_OneConnection_OnlyThatConnectionEndsOthersEchoExactly(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, _ => { }, new TestHostOptions
        {
            Output = output,
            ConfigureListen = ScriptedEcho.Use,
            // Kestrel reports an exception escaping connection middleware at Error: that one is expected.
            ExpectedLog = r => r.Exception?.Message == ScriptedEcho.ThrowMarker,
        });

        const int Connections = 40;
        const long Size = 1024 * 1024;
        const int Victim = 17;
        ScriptedEcho.Outcome[] outcomes = await Task.WhenAll(Enumerable.Range(0, Connections).Select(i => i == Victim
            ? ScriptedEcho.RunClientAsync(host.EndPoint, i, EchoRole.Throw, stopAfter: 100_000, Size)
            : ScriptedEcho.RunClientAsync(host.EndPoint, i, EchoRole.Echo, stopAfter: 0, Size))).WaitAsync(Timeouts.Bulk);

        foreach (ScriptedEcho.Outcome outcome in outcomes)
        {
            Assert.Null(outcome.Error);
            if (outcome.Id == Victim)
            {
                Assert.True(outcome.EndedByServer, "The throwing connection was not ended.");
                Assert.True(outcome.Received <= 100_000, $"The throwing connection echoed {outcome.Received} bytes, more than it was scripted to.");
            }
            else
            {
                Assert.Equal(Size, outcome.Received);
            }
        }

        Assert.Contains(host.Logs.Records, r => r.Exception?.Message == ScriptedEcho.ThrowMarker);
        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task AbortAndReset_WhileStreamingBothWays_SurvivorsExactAndEveryBlockReturned(TransportKind transport)
    {
        await using TestHost host = await TestHost.StartAsync(transport, _ => { }, new TestHostOptions
        {
            Output = output,
            ConfigureListen = ScriptedEcho.Use,
        });

        const int Connections = 120;
        var random = new Random(4242);
        var plans = Enumerable.Range(0, Connections).Select(i =>
        {
            long size = random.NextInt64(16 * 1024, 1536 * 1024);
            int kind = random.Next(4);
            return kind switch
            {
                // Server aborts mid-stream: receives and sends are in flight on both sides.
                0 => (Id: i, Role: EchoRole.Abort, StopAfter: (int)random.NextInt64(1, size), Size: size, ResetAt: -1L),
                // Client resets mid-stream.
                1 => (Id: i, Role: EchoRole.Echo, StopAfter: 0, Size: size, ResetAt: random.NextInt64(0, size)),
                _ => (Id: i, Role: EchoRole.Echo, StopAfter: 0, Size: size, ResetAt: -1L),
            };
        }).ToList();

        ScriptedEcho.Outcome[] outcomes = await Task.WhenAll(plans.Select(p => ScriptedEcho.RunClientAsync(host.EndPoint, p.Id, p.Role, p.StopAfter, p.Size, p.ResetAt))).WaitAsync(Timeouts.Bulk);

        int survivors = 0;
        foreach (ScriptedEcho.Outcome outcome in outcomes)
        {
            Assert.True(outcome.Error is null, $"Connection {outcome.Id} ({outcome.Role}, reset {outcome.ClientReset}): {outcome.Error}");
            if (outcome.Role == EchoRole.Abort)
            {
                Assert.True(outcome.EndedByServer, $"Aborted connection {outcome.Id} was not ended.");
            }
            else if (!outcome.ClientReset)
            {
                Assert.Equal(outcome.Size, outcome.Received);
                survivors++;
            }
        }

        output.WriteLine($"{survivors} survivors verified, {outcomes.Count(o => o.Role == EchoRole.Abort)} aborted by the server, {outcomes.Count(o => o.ClientReset)} reset by the client; pool peak {host.Pool.PeakOutstanding} blocks.");
        Assert.True(survivors > Connections / 3);
        // StopAndVerifyAsync proves every pool block came back, none twice, and no descriptor leaked.
        await host.StopAndVerifyAsync();
    }
}
