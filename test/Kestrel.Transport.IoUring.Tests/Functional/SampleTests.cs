using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Functional;

/// <summary>The samples' documented command lines, run as processes, checked by their responses.</summary>
public class SampleTests(ITestOutputHelper output)
{
    private const string IoUringStartedLine = "Kestrel is serving with the io_uring transport";
    private const string FallbackWarning = "io_uring is unavailable, so Kestrel is serving with the Sockets transport instead";

    private static string Name(TransportKind transport) => transport == TransportKind.IoUring ? "iouring" : "sockets";

    [SkippableTheory]
    [InlineData(TransportKind.IoUring, false)]
    [InlineData(TransportKind.IoUring, true)]
    [InlineData(TransportKind.Sockets, false)]
    [InlineData(TransportKind.Sockets, true)]
    public async Task PlatformBenchmarks_PlaintextAndJson_ServeTechEmpowerResponses(TransportKind transport, bool inline)
    {
        transport.EnsureAvailable();
        string[] args = inline
            ? ["--transport", Name(transport), "--inline", "--urls", "http://127.0.0.1:0"]
            : ["--transport", Name(transport), "--urls", "http://127.0.0.1:0"];
        await using SampleProcess sample = SampleProcess.Start("PlatformBenchmarks", args);
        Uri baseUri = await sample.WaitForListeningAsync();

        using (var client = new HttpClient { BaseAddress = baseUri, Timeout = Timeouts.Step })
        {
            using HttpResponseMessage plaintext = await client.GetAsync("/plaintext");
            Assert.Equal(HttpStatusCode.OK, plaintext.StatusCode);
            Assert.Equal("Hello, World!", await plaintext.Content.ReadAsStringAsync());
            Assert.Equal("text/plain", plaintext.Content.Headers.ContentType?.ToString());
            Assert.Equal(13, plaintext.Content.Headers.ContentLength);
            Assert.Equal("Kestrel", plaintext.Headers.Server.ToString());
            Assert.NotNull(plaintext.Headers.Date);

            using HttpResponseMessage json = await client.GetAsync("/json");
            Assert.Equal(HttpStatusCode.OK, json.StatusCode);
            Assert.Equal("""{"message":"Hello, World!"}""", await json.Content.ReadAsStringAsync());
            Assert.Equal("application/json", json.Content.Headers.ContentType?.ToString());
            Assert.Equal(27, json.Content.Headers.ContentLength);
            Assert.Equal("Kestrel", json.Headers.Server.ToString());
            Assert.NotNull(json.Headers.Date);

            using HttpResponseMessage missing = await client.GetAsync("/missing");
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        }

        // Pipelined, as the TechEmpower plaintext benchmark sends them.
        await using (RawConnection connection = await RawConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, baseUri.Port)))
        {
            await connection.SendAsync(string.Concat(Enumerable.Repeat("GET /plaintext HTTP/1.1\r\nHost: test\r\n\r\n", 16)));
            for (int i = 0; i < 16; i++)
            {
                RawResponse response = await connection.ReadResponseAsync();
                Assert.Equal(200, response.StatusCode);
                Assert.Equal("Hello, World!", response.BodyText);
            }
        }

        Assert.Equal(0, await sample.StopAsync());
        AssertCleanOutput(sample, transport);
        if (transport == TransportKind.IoUring)
        {
            // --inline must reach the transport's options.
            Assert.Contains(inline ? "inline scheduling" : "thread-pool scheduling", sample.Output);
        }
    }

    [SkippableTheory, AllTransports]
    public async Task Echo_RandomBytesOnSeveralConnections_EchoedBack(TransportKind transport)
    {
        transport.EnsureAvailable();
        await using SampleProcess sample = SampleProcess.Start("Echo", ["--transport", Name(transport), "--port", "0"]);
        Uri address = await sample.WaitForListeningAsync();

        await Task.WhenAll(Enumerable.Range(0, 8).Select(i => AssertEchoesAsync(new IPEndPoint(IPAddress.Loopback, address.Port), 256 * 1024 + i)));

        Assert.Equal(0, await sample.StopAsync());
        AssertCleanOutput(sample, transport);
    }

    [SkippableTheory, AllTransports]
    public async Task Samples_UnknownArgument_PrintUsageAndExitWithError(TransportKind transport)
    {
        foreach (string name in new[] { "PlatformBenchmarks", "Echo" })
        {
            await using SampleProcess sample = SampleProcess.Start(name, ["--transport", Name(transport), "--no-such-option"]);
            Assert.Equal(2, await sample.WaitForExitAsync());
            Assert.Contains("Unknown or incomplete argument '--no-such-option'", sample.Output);
            Assert.Contains($"Usage: {name} --transport iouring|sockets", sample.Output);
        }
    }

    // The fallback is io_uring's behaviour alone (Sockets has nothing to fall back from), so these are
    // facts: a child process, because the probe result is cached per process.
    [Fact]
    public async Task UseIoUring_ForcedUnavailable_LogsOneWarningWithReasonAndServesWithSockets()
    {
        await using SampleProcess sample = SampleProcess.Start("Echo", ["--transport", "iouring", "--port", "0"],
            new Dictionary<string, string> { [IoUringSupport.ForceUnavailableEnvironmentVariable] = "1" });
        Uri address = await sample.WaitForListeningAsync();
        await AssertEchoesAsync(new IPEndPoint(IPAddress.Loopback, address.Port), 64 * 1024);
        Assert.Equal(0, await sample.StopAsync());

        output.WriteLine(sample.Output);
        Assert.Single(sample.Output.Split(FallbackWarning).Skip(1));
        Assert.Contains($"turned off by the environment variable {IoUringSupport.ForceUnavailableEnvironmentVariable}", sample.Output);
        Assert.DoesNotContain(IoUringStartedLine, sample.Output);
        Assert.Single(sample.Output.Split("warn:").Skip(1));
    }

    [Fact]
    public async Task UseIoUring_ForcedUnavailableWithThrowIfUnavailable_FailsToStartWithClearMessage()
    {
        await using SampleProcess sample = SampleProcess.Start("Echo", ["--transport", "iouring", "--require-iouring", "--port", "0"],
            new Dictionary<string, string> { [IoUringSupport.ForceUnavailableEnvironmentVariable] = "1" });
        int exitCode = await sample.WaitForExitAsync();

        output.WriteLine(sample.Output);
        Assert.Equal(1, exitCode);
        Assert.Contains("Echo failed to start", sample.Output);
        Assert.Contains("ThrowIfUnavailable", sample.Output);
        Assert.Contains($"turned off by the environment variable {IoUringSupport.ForceUnavailableEnvironmentVariable}", sample.Output);
        Assert.DoesNotContain("Now listening on", sample.Output);
    }

    private void AssertCleanOutput(SampleProcess sample, TransportKind transport)
    {
        output.WriteLine(sample.Output);
        if (transport == TransportKind.IoUring)
        {
            Assert.Contains(IoUringStartedLine, sample.Output);
        }
        else
        {
            Assert.DoesNotContain(IoUringStartedLine, sample.Output);
        }

        foreach (string level in new[] { "warn:", "fail:", "crit:", "Unhandled exception" })
        {
            Assert.DoesNotContain(level, sample.Output);
        }
    }

    private static async Task AssertEchoesAsync(EndPoint endPoint, int length)
    {
        byte[] sent = new byte[length];
        Random.Shared.NextBytes(sent);
        await using RawConnection connection = await RawConnection.ConnectAsync(endPoint);

        // Send and receive at once: the echo comes back while we are still sending.
        Task send = connection.SendAsync(sent);
        Task<byte[]> receive = connection.ReadExactlyAsync(length);
        await Task.WhenAll(send, receive).WaitAsync(Timeouts.Step);
        byte[] received = await receive;
        Assert.True(sent.AsSpan().SequenceEqual(received), "The echoed bytes differ from the sent ones.");

        connection.ShutdownSend();
        Assert.Equal(0, await connection.ReceiveAsync(new byte[1]));
    }
}
