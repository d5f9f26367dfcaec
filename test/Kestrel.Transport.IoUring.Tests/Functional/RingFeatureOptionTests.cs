using System.Diagnostics;
using System.Net;
using System.Reflection;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Reliability;
using Kestrel.Transport.IoUring.Transport.Internal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;
using Xunit.Sdk;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>A kernel feature the transport can be told not to use (None: everything on, as by default).</summary>
public enum RingFeature
{
    None,
    MultishotAccept,
    MultishotReceive,
    ProvidedBuffers,
    DeferTaskRun,
    RegisteredRingFd,
    All,
}

/// <summary>Runs a <c>[SkippableTheory]</c> once per feature turned off, and once with all of them off.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class EachRingFeatureOffAttribute : DataAttribute
{
    public override IEnumerable<object[]> GetData(MethodInfo testMethod)
        => Enum.GetValues<RingFeature>().Where(f => f != RingFeature.None).Select(f => new object[] { f });
}

/// <summary>
/// Every kernel feature switch of <see cref="IoUringTransportOptions"/> turned off in turn: the transport
/// still serves a representative set of the functional scenarios exactly (with the usual leak checks),
/// and each switch really changes what the reactors use.
/// </summary>
public class RingFeatureOptionTests(ITestOutputHelper output)
{
    private static void TurnOff(IoUringTransportOptions o, RingFeature feature)
    {
        bool all = feature == RingFeature.All;
        o.UseMultishotAccept &= !(all || feature == RingFeature.MultishotAccept);
        o.UseMultishotReceive &= !(all || feature == RingFeature.MultishotReceive);
        o.UseProvidedBuffers &= !(all || feature == RingFeature.ProvidedBuffers);
        o.UseDeferTaskRun &= !(all || feature == RingFeature.DeferTaskRun);
        o.UseRegisteredRingFd &= !(all || feature == RingFeature.RegisteredRingFd);
    }

    private TestHostOptions Options(RingFeature feature, Action<Microsoft.AspNetCore.Server.Kestrel.Core.ListenOptions>? listen = null, TimeSpan? shutdownTimeout = null) => new()
    {
        Output = output,
        ConfigureListen = listen,
        ConfigureIoUring = o => TurnOff(o, feature),
        ShutdownTimeout = shutdownTimeout ?? TimeSpan.FromSeconds(10),
    };

    [SkippableTheory, EachRingFeatureOff]
    public async Task Echo_FeatureOff_EveryByteExactUpTo4MiBAndAbortsEndOnlyTheirConnection(RingFeature feature)
    {
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, _ => { }, Options(feature, ScriptedEcho.Use));

        long[] sizes = [0, 1, 100, 4095, 4096, 4097, 65_537, 1024 * 1024, 4 * 1024 * 1024 + 3];
        var clients = new List<Task<ScriptedEcho.Outcome>>();
        for (int i = 0; i < sizes.Length; i++)
        {
            clients.Add(ScriptedEcho.RunClientAsync(host.EndPoint, i, EchoRole.Echo, stopAfter: 0, sizes[i]));
        }

        const int Aborted = 100;
        const int Reset = 101;
        clients.Add(ScriptedEcho.RunClientAsync(host.EndPoint, Aborted, EchoRole.Abort, stopAfter: 50_000, 1024 * 1024));
        clients.Add(ScriptedEcho.RunClientAsync(host.EndPoint, Reset, EchoRole.Echo, stopAfter: 0, 1024 * 1024, resetAt: 200_000));
        ScriptedEcho.Outcome[] outcomes = await Task.WhenAll(clients).WaitAsync(Timeouts.Bulk);

        foreach (ScriptedEcho.Outcome outcome in outcomes)
        {
            Assert.Null(outcome.Error);
            switch (outcome.Id)
            {
                case Aborted:
                    Assert.True(outcome.EndedByServer, "The aborted connection was not ended by the server.");
                    Assert.True(outcome.Received <= 50_000, $"The aborted connection echoed {outcome.Received} bytes, more than scripted.");
                    break;
                case Reset:
                    Assert.True(outcome.ClientReset);
                    break;
                default:
                    Assert.Equal(outcome.Size, outcome.Received);
                    break;
            }
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, EachRingFeatureOff]
    public async Task HttpClient_FeatureOff_ConcurrentUploadsKeepAliveAndConnectionClose(RingFeature feature)
    {
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, async ctx =>
        {
            long length = await BytePattern.VerifyAsync(ctx.Request.Body);
            await ctx.Response.WriteAsync(length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }, Options(feature));

        using (var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 32 }) { Timeout = Timeouts.Bulk })
        {
            await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
            {
                long length = (i % 7) * 37_001;
                using var request = new HttpRequestMessage(HttpMethod.Post, host.BaseUri()) { Content = new PatternContent(length, chunked: i % 2 == 0) };
                request.Headers.ConnectionClose = i % 4 == 0; // connection churn through the accept path
                using HttpResponseMessage response = await client.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal(length.ToString(System.Globalization.CultureInfo.InvariantCulture), await response.Content.ReadAsStringAsync());
            })).WaitAsync(Timeouts.Bulk);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, EachRingFeatureOff]
    public async Task ManyConnections_FeatureOff_ServedAtOnceWithTrueRemoteEndPointsThenStopWithRequestsInFlight(RingFeature feature)
    {
        const int Connections = 300;
        const int Waiting = 50;
        int arrived = 0;
        var allArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int waitingStarted = 0;
        var allWaiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, async ctx =>
        {
            if (ctx.Request.Path == "/wait")
            {
                if (Interlocked.Increment(ref waitingStarted) == Waiting)
                {
                    allWaiting.SetResult();
                }

                try
                {
                    // Until Kestrel gives up on graceful shutdown and aborts the connection.
                    await Task.Delay(Timeout.InfiniteTimeSpan, ctx.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                }

                return;
            }

            if (Interlocked.Increment(ref arrived) == Connections)
            {
                allArrived.SetResult();
            }

            await allArrived.Task.WaitAsync(Timeouts.Bulk);
            await ctx.Response.WriteAsync($"{ctx.Connection.RemoteIpAddress}:{ctx.Connection.RemotePort}");
        }, Options(feature, shutdownTimeout: TimeSpan.FromSeconds(2)));

        var answering = new RawConnection?[Connections];
        var waiting = new RawConnection?[Waiting];
        try
        {
            using var gate = new SemaphoreSlim(64);
            await Task.WhenAll(Enumerable.Range(0, Connections + Waiting).Select(async i =>
            {
                await gate.WaitAsync();
                try
                {
                    RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint);
                    if (i < Connections)
                    {
                        answering[i] = connection;
                        await connection.SendAsync($"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n");
                    }
                    else
                    {
                        waiting[i - Connections] = connection;
                        await connection.SendAsync("GET /wait HTTP/1.1\r\nHost: test\r\n\r\n");
                    }
                }
                finally
                {
                    gate.Release();
                }
            })).WaitAsync(Timeouts.Bulk);

            await allArrived.Task.WaitAsync(Timeouts.Bulk);
            await allWaiting.Task.WaitAsync(Timeouts.Bulk);
            await Task.WhenAll(answering.Select(async c =>
            {
                RawResponse r = await c!.ReadResponseAsync();
                Assert.Equal(200, r.StatusCode);

                // The address the transport reports (getpeername, or the kernel's accept address) is the client's.
                var local = (IPEndPoint)c.Socket.LocalEndPoint!;
                Assert.Equal($"{local.Address}:{local.Port}", r.BodyText);
            })).WaitAsync(Timeouts.Bulk);

            var clock = Stopwatch.StartNew();
            await host.StopAsync();
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2 + 2.5), $"Stopping with {Waiting} requests in flight took {clock.Elapsed.TotalSeconds:0.00} s.");
        }
        finally
        {
            foreach (RawConnection? connection in answering.Concat(waiting))
            {
                if (connection is not null)
                {
                    await connection.DisposeAsync();
                }
            }
        }

        Assert.Equal(Connections + Waiting, host.ConnectionTypes.Count);
        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, EachRingFeatureOff, InlineData(RingFeature.None)]
    public async Task StartupLogAndCounters_FeatureOff_ShowWhatTheReactorsReallyUse(RingFeature feature)
    {
        const int Connections = 20;
        const int Upload = 200_000;
        await using TestHost host = await TestHost.StartAsync(TransportKind.IoUring, async ctx =>
        {
            long length = await BytePattern.VerifyAsync(ctx.Request.Body);
            await ctx.Response.WriteAsync(length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }, Options(feature));

        for (int i = 0; i < Connections; i++)
        {
            await using RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint);
            await connection.SendAsync($"POST / HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {Upload}\r\n\r\n");
            byte[] body = new byte[Upload];
            BytePattern.Fill(body, 0);
            await connection.SendAsync(body);
            RawResponse response = await connection.ReadResponseAsync();
            Assert.Equal(Upload.ToString(System.Globalization.CultureInfo.InvariantCulture), response.BodyText);
        }

        ReactorGroup group = host.IoUringFactory!.Reactors!;
        long acceptSqes = 0, peerNames = 0, recvSqes = 0, providedRecvs = 0, pipeRecvs = 0, accepted = 0;
        for (int i = 0; i < group.Count; i++)
        {
            ReactorStats stats = group.StatsFor(i);
            acceptSqes += stats.AcceptSubmissions;
            peerNames += stats.PeerNameLookups;
            recvSqes += stats.ReceiveSubmissions;
            providedRecvs += stats.ProvidedBufferReceives;
            pipeRecvs += stats.PipeReceives;
            accepted += stats.ConnectionsAccepted;
        }

        string started = host.Logs.Records.Single(r => r.EventId.Id == 100).Message;
        output.WriteLine(started);
        output.WriteLine($"accepted {accepted}, accept SQEs {acceptSqes}, getpeername {peerNames}, recv SQEs {recvSqes}, provided-buffer recvs {providedRecvs}, pipe recvs {pipeRecvs}");
        Assert.Equal(Connections, accepted);
        bool all = feature == RingFeature.All;

        if (all || feature == RingFeature.MultishotAccept)
        {
            Assert.Contains("single-shot accept", started, StringComparison.Ordinal);
            Assert.True(acceptSqes >= Connections, $"{acceptSqes} accept SQEs for {Connections} single-shot accepts");
            Assert.Equal(0, peerNames); // the kernel reported every peer address with its accept
        }
        else
        {
            Assert.Contains("multishot accept", started, StringComparison.Ordinal);
            Assert.True(acceptSqes <= group.Count, $"{acceptSqes} multishot accept SQEs for {group.Count} listen sockets");
            Assert.Equal(Connections, peerNames);
        }

        if (all || feature == RingFeature.ProvidedBuffers)
        {
            Assert.Contains("single-shot recv into the input pipe", started, StringComparison.Ordinal);
            Assert.Equal(0, providedRecvs);
            Assert.True(pipeRecvs >= Connections * (Upload / 4096), $"{pipeRecvs} receives into pipe memory");
            Assert.True(recvSqes >= pipeRecvs, $"{recvSqes} receive SQEs for {pipeRecvs} single-shot receives");
            Assert.Throws<InvalidOperationException>(() => group[0].Buffers);
        }
        else if (feature == RingFeature.MultishotReceive)
        {
            Assert.Contains("single-shot recv over", started, StringComparison.Ordinal);
            Assert.Equal(0, pipeRecvs);
            Assert.True(recvSqes >= providedRecvs, $"{recvSqes} receive SQEs for {providedRecvs} single-shot receives");
        }
        else
        {
            Assert.Contains("multishot recv over", started, StringComparison.Ordinal);
            Assert.Equal(0, pipeRecvs);
            // 200 KB per connection arrives in many 4 KiB buffers through far fewer receive SQEs.
            Assert.True(recvSqes * 4 < providedRecvs, $"{recvSqes} multishot receive SQEs for {providedRecvs} completions");
        }

        for (int i = 0; i < group.Count; i++)
        {
            uint flags = group[i].RingSetupFlags;
            if (all || feature == RingFeature.DeferTaskRun)
            {
                Assert.Equal(0u, flags & (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER));
                Assert.Equal(IORING_SETUP_COOP_TASKRUN, flags & IORING_SETUP_COOP_TASKRUN);
            }
            else
            {
                Assert.Equal(IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER, flags & (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER));
            }

            Assert.Equal(!(all || feature == RingFeature.RegisteredRingFd), group[i].RingFdRegistered);
        }

        Assert.Equal(all || feature == RingFeature.DeferTaskRun, started.Contains("COOP_TASKRUN", StringComparison.Ordinal));
        Assert.Equal(!(all || feature == RingFeature.DeferTaskRun), started.Contains("DEFER_TASKRUN", StringComparison.Ordinal));
        Assert.Equal(all || feature == RingFeature.RegisteredRingFd, started.Contains("unregistered ring fd", StringComparison.Ordinal));
        await host.StopAndVerifyAsync();
    }

    [Fact]
    public void Options_FeatureSwitchesFromConfiguration_AreBoundAndDefaultOn()
    {
        Assert.True(new IoUringTransportOptions() is
        {
            UseMultishotAccept: true, UseMultishotReceive: true, UseProvidedBuffers: true, UseDeferTaskRun: true, UseRegisteredRingFd: true,
            UseDirectSend: true,
        });
        using WebApplication app = IoUringApp.Build(
            _ => Task.CompletedTask,
            configuration: new()
            {
                ["Kestrel:Transport:IoUring:UseMultishotAccept"] = "false",
                ["Kestrel:Transport:IoUring:UseMultishotReceive"] = "false",
                ["Kestrel:Transport:IoUring:UseProvidedBuffers"] = "false",
                ["Kestrel:Transport:IoUring:UseDeferTaskRun"] = "false",
                ["Kestrel:Transport:IoUring:UseRegisteredRingFd"] = "false",
                ["Kestrel:Transport:IoUring:UseDirectSend"] = "false",
            });
        IoUringTransportOptions options = app.Services.GetRequiredService<IOptions<IoUringTransportOptions>>().Value;
        Assert.False(options.UseMultishotAccept);
        Assert.False(options.UseMultishotReceive);
        Assert.False(options.UseProvidedBuffers);
        Assert.False(options.UseDeferTaskRun);
        Assert.False(options.UseRegisteredRingFd);
        Assert.False(options.UseDirectSend);
    }
}
