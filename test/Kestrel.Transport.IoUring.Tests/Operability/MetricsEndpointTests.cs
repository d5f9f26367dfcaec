using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Operability;

/// <summary>
/// The samples' <c>--metrics</c> switch: the transport's meter scraped in the Prometheus text format
/// through the OpenTelemetry exporter, from PlatformBenchmarks run as a process.
/// </summary>
public sealed partial class MetricsEndpointTests(ITestOutputHelper output)
{
    private const int Requests = 10;

    [SkippableFact]
    public async Task PlatformBenchmarks_MetricsSwitch_ServesIoUringInstrumentsWithCountsOfTheTraffic()
    {
        IoUringRequirement.Ensure();
        await using SampleProcess sample = SampleProcess.Start("PlatformBenchmarks",
            ["--transport", "iouring", "--require-iouring", "--metrics", "--urls", "http://127.0.0.1:0"]);
        Uri baseUri = await sample.WaitForListeningAsync();

        // One connection per request, so every request is also an accept.
        for (int i = 0; i < Requests; i++)
        {
            using var client = new HttpClient { BaseAddress = baseUri, Timeout = Timeouts.Step };
            Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext"));
        }

        string text;
        using (var client = new HttpClient { BaseAddress = baseUri, Timeout = Timeouts.Step })
        {
            using HttpResponseMessage response = await client.GetAsync("/metrics");
            text = await response.Content.ReadAsStringAsync();
            output.WriteLine(text);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        }

        IReadOnlyList<Sample> samples = Parse(text);
        Assert.Equal(0, await sample.StopAsync());

        // Every instrument of the meter is exported, the per-reactor ones once per reactor.
        string[] perReactor =
        [
            "iouring_transport_active_connections", "iouring_transport_accepted_connections_total",
            "iouring_transport_received_bytes_total", "iouring_transport_sent_bytes_total",
            "iouring_ring_enter_calls_total", "iouring_ring_submissions_total", "iouring_ring_completions_total",
            "iouring_ring_cq_overflows_total", "iouring_ring_buffer_exhaustions_total",
        ];
        int reactors = samples.Where(s => s.Name == "iouring_ring_enter_calls_total").Select(s => s.Reactor).Distinct().Count();
        Assert.True(reactors >= 1, "No iouring_reactor label on iouring_ring_enter_calls_total.");
        foreach (string name in perReactor)
        {
            Assert.Equal(reactors, samples.Count(s => s.Name == name && s.Reactor is not null));
            Assert.All(samples.Where(s => s.Name == name), s => Assert.Equal("Kestrel.Transport.IoUring", s.Scope));
        }

        Assert.Contains("# TYPE iouring_transport_accepted_connections_total counter", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE iouring_transport_active_connections gauge", text, StringComparison.Ordinal);

        // The values describe the traffic above (plus the scrape's own connection).
        Assert.True(Sum(samples, "iouring_transport_accepted_connections_total") >= Requests + 1);
        Assert.True(Sum(samples, "iouring_transport_active_connections") >= 1, "The scrape's own connection is open.");
        Assert.True(Sum(samples, "iouring_transport_received_bytes_total") >= Requests * "GET /plaintext HTTP/1.1\r\n".Length);
        Assert.True(Sum(samples, "iouring_transport_sent_bytes_total") >= Requests * "Hello, World!".Length);
        Assert.True(Sum(samples, "iouring_ring_enter_calls_total") > 0);
        Assert.True(Sum(samples, "iouring_ring_submissions_total") >= Requests, "At least one receive submitted per connection.");
        Assert.True(Sum(samples, "iouring_ring_completions_total") >= Requests);
        Assert.Equal(0, Sum(samples, "iouring_ring_cq_overflows_total"));
        Assert.Equal(0, Sum(samples, "iouring_transport_fallbacks_total"));

        // Kestrel's and hosting's own meters come along.
        Assert.Contains(samples, s => s.Name == "kestrel_active_connections");
        Assert.Contains(samples, s => s.Name.StartsWith("http_server_request_duration_seconds", StringComparison.Ordinal));
    }

    [SkippableFact]
    public async Task PlatformBenchmarks_WithoutMetricsSwitch_MetricsPathNotFound()
    {
        IoUringRequirement.Ensure();
        await using SampleProcess sample = SampleProcess.Start("PlatformBenchmarks",
            ["--transport", "iouring", "--require-iouring", "--urls", "http://127.0.0.1:0"]);
        Uri baseUri = await sample.WaitForListeningAsync();
        using (var client = new HttpClient { BaseAddress = baseUri, Timeout = Timeouts.Step })
        {
            using HttpResponseMessage response = await client.GetAsync("/metrics");
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }

        Assert.Equal(0, await sample.StopAsync());
    }

    private static double Sum(IEnumerable<Sample> samples, string name)
    {
        Sample[] matching = [.. samples.Where(s => s.Name == name)];
        Assert.True(matching.Length > 0, $"No {name} in the scrape.");
        return matching.Sum(s => s.Value);
    }

    /// <summary>Sample lines of the Prometheus text format: <c>name{label="value",...} number</c>.</summary>
    private static List<Sample> Parse(string text)
    {
        var samples = new List<Sample>();
        foreach (string line in text.Split('\n'))
        {
            Match match = SampleLine().Match(line.TrimEnd('\r'));
            if (!match.Success)
            {
                continue;
            }

            var labels = new Dictionary<string, string>();
            foreach (Match label in LabelPair().Matches(match.Groups["labels"].Value))
            {
                labels[label.Groups[1].Value] = label.Groups[2].Value;
            }

            samples.Add(new Sample(
                match.Groups["name"].Value,
                labels.GetValueOrDefault("otel_scope_name"),
                labels.GetValueOrDefault("iouring_reactor"),
                double.Parse(match.Groups["value"].Value, CultureInfo.InvariantCulture)));
        }

        return samples;
    }

    private sealed record Sample(string Name, string? Scope, string? Reactor, double Value);

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)( \d+)?$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"([a-zA-Z_][a-zA-Z0-9_]*)=""((?:[^""\\]|\\.)*)""")]
    private static partial Regex LabelPair();
}
