using System.Text.RegularExpressions;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>Many connections at once.</summary>
public partial class ConcurrencyTests(ITestOutputHelper output)
{
    private const int Connections = 1200;

    [SkippableTheory, AllTransports]
    public async Task ManyConnections_1200AtOnce_AllServedConcurrently(TransportKind transport)
    {
        // Client and server ends of every connection live in this process, plus the runtime's own.
        // build/test.sh (and so .ci/run) raises the limit with `ulimit -n 65536`.
        long needed = (2 * Connections) + 512;
        long limit = OpenFileLimit();
        if (limit < needed)
        {
            string reason = $"The open file limit is {limit}, this test needs {needed}: run it under `ulimit -n 65536` (build/test.sh does).";
            Assert.False(IoUringRequirement.IsRequired || Environment.GetEnvironmentVariable("CI") is not null, reason);
            Skip.If(true, reason);
        }

        int arrived = 0;
        var allArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(transport, async ctx =>
        {
            // No request is answered until every connection has one in flight: they are served at once.
            if (Interlocked.Increment(ref arrived) == Connections)
            {
                allArrived.SetResult();
            }

            await allArrived.Task.WaitAsync(Timeouts.Bulk);
            await ctx.Response.WriteAsync("ok " + ctx.Request.Path);
        }, new TestHostOptions { Output = output });

        var connections = new List<RawConnection>(Connections);
        try
        {
            using var gate = new SemaphoreSlim(64);
            await Task.WhenAll(Enumerable.Range(0, Connections).Select(async i =>
            {
                await gate.WaitAsync();
                try
                {
                    RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint);
                    lock (connections)
                    {
                        connections.Add(connection);
                    }

                    await connection.SendAsync($"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n");
                }
                finally
                {
                    gate.Release();
                }
            })).WaitAsync(Timeouts.Bulk);

            await allArrived.Task.WaitAsync(Timeouts.Bulk);
            RawResponse[] responses = await Task.WhenAll(connections.Select(c => c.ReadResponseAsync())).WaitAsync(Timeouts.Bulk);
            Assert.All(responses, r => Assert.Equal(200, r.StatusCode));
            Assert.Equal(Connections, responses.Select(r => r.BodyText).Distinct().Count());
        }
        finally
        {
            foreach (RawConnection connection in connections)
            {
                await connection.DisposeAsync();
            }
        }

        Assert.Equal(Connections, host.ConnectionTypes.Count);
        await host.StopAndVerifyAsync();
    }

    private static long OpenFileLimit()
    {
        Match match = MaxOpenFiles().Match(File.ReadAllText("/proc/self/limits"));
        return !match.Success ? 0 : match.Groups[1].Value == "unlimited" ? long.MaxValue : long.Parse(match.Groups[1].Value);
    }

    [GeneratedRegex(@"^Max open files\s+(\S+)", RegexOptions.Multiline)]
    private static partial Regex MaxOpenFiles();
}
