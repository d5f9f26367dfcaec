// TechEmpower-style /plaintext and /json over Kestrel, on the io_uring or the Sockets transport.
//   dotnet run -c Release --project samples/PlatformBenchmarks -- --transport iouring|sockets [--inline] [--metrics] --urls http://127.0.0.1:PORT
//     [--Kestrel:Transport:IoUring:OPTION=VALUE ...]
using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization;
using OpenTelemetry.Metrics;

const string Usage = """
    Usage: PlatformBenchmarks --transport iouring|sockets [--inline] [--require-iouring] [--metrics] [--alloc-stats] [--urls URLS]
      --transport        iouring (default) or sockets
      --inline           turn on UnsafePreferInlineScheduling of the chosen transport
      --require-iouring  with iouring: fail to start instead of falling back to Sockets (ThrowIfUnavailable)
      --metrics          serve the transport's, Kestrel's and hosting's metrics at GET /metrics (Prometheus text)
      --alloc-stats      serve GET /_alloc: bytes allocated by the process so far (GC.GetTotalAllocatedBytes),
                         for measuring allocations per request (build/allocations.py)
      --urls             where to listen (default http://127.0.0.1:5000)
      --Kestrel:KEY=VALUE  configuration, e.g. --Kestrel:Transport:IoUring:UseMultishotAccept=false
    Serves GET /plaintext and GET /json.
    """;

string transport = "iouring";
bool inline = false;
bool requireIoUring = false;
bool metrics = false;
bool allocStats = false;
string urls = "http://127.0.0.1:5000";
List<string> configurationArgs = [];
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--transport" when i + 1 < args.Length && args[i + 1] is "iouring" or "sockets":
            transport = args[++i];
            break;
        case "--inline":
            inline = true;
            break;
        case "--require-iouring":
            requireIoUring = true;
            break;
        case "--metrics":
            metrics = true;
            break;
        case "--alloc-stats":
            allocStats = true;
            break;
        case "--urls" when i + 1 < args.Length:
            urls = args[++i];
            break;
        case string option when option.StartsWith("--Kestrel:", StringComparison.Ordinal) && option.Contains('='):
            configurationArgs.Add(option);
            break;
        default:
            Console.Error.WriteLine($"Unknown or incomplete argument '{args[i]}'.");
            Console.Error.WriteLine(Usage);
            return 2;
    }
}

WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });

// Only the Kestrel section comes from the command line (the transport binds Kestrel:Transport:IoUring).
builder.Configuration.AddCommandLine([.. configurationArgs]);

// Warning by default so console logging does not slow the benchmark; the startup lines (addresses,
// which transport serves) stay visible.
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
builder.Logging.AddFilter("Kestrel.Transport.IoUring", LogLevel.Information);

if (transport == "iouring")
{
    builder.WebHost.UseIoUring(o =>
    {
        o.UnsafePreferInlineScheduling = inline;
        o.ThrowIfUnavailable = requireIoUring;
    });
}
else
{
    builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = inline);
}

builder.WebHost.UseUrls(urls);

if (metrics)
{
    // Off by default: the benchmark measures the transport, not the exporter.
    builder.Services.AddOpenTelemetry().WithMetrics(m => m
        .AddMeter("Kestrel.Transport.IoUring", "Microsoft.AspNetCore.Server.Kestrel", "Microsoft.AspNetCore.Hosting")
        .AddPrometheusExporter());
}

WebApplication app = builder.Build();
if (metrics)
{
    // Middleware, not MapPrometheusScrapingEndpoint: this app has no routing, only one terminal handler.
    app.UseOpenTelemetryPrometheusScrapingEndpoint();
}

AllocationSampler? sampler = allocStats ? new AllocationSampler() : null;
if (sampler is not null)
{
    app.Use((context, next) => context.Request.Path.Value switch
    {
        "/_alloc" => context.Response.WriteAsync(GC.GetTotalAllocatedBytes(precise: true).ToString(System.Globalization.CultureInfo.InvariantCulture)),
        "/_alloc/types" => context.Response.WriteAsync(sampler.Report()),
        _ => next(context),
    });
}

app.Run(Endpoints.HandleAsync);

try
{
    await app.RunAsync();
    return 0;
}
catch (Exception ex) when (ex is IOException or PlatformNotSupportedException or InvalidOperationException)
{
    Console.Error.WriteLine($"PlatformBenchmarks failed to start: {ex.Message}");
    return 1;
}

internal static class Endpoints
{
    private static readonly byte[] s_plaintextBody = "Hello, World!"u8.ToArray();

    /// <summary>One terminal middleware: no routing, no MVC; bodies written with a Content-Length.</summary>
    public static Task HandleAsync(HttpContext context)
    {
        HttpResponse response = context.Response;
        switch (context.Request.Path.Value)
        {
            case "/plaintext":
                response.StatusCode = StatusCodes.Status200OK;
                response.ContentType = "text/plain";
                response.ContentLength = s_plaintextBody.Length;
                response.BodyWriter.Write(s_plaintextBody);
                return Task.CompletedTask;

            case "/json":
                // TechEmpower requires serializing per request.
                byte[] json = JsonSerializer.SerializeToUtf8Bytes(new JsonMessage { Message = "Hello, World!" }, AppJsonContext.Default.JsonMessage);
                response.StatusCode = StatusCodes.Status200OK;
                response.ContentType = "application/json";
                response.ContentLength = json.Length;
                response.BodyWriter.Write(json);
                return Task.CompletedTask;

            default:
                response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
        }
    }
}

/// <summary>
/// The runtime's allocation sampling (GCAllocationTick: one event per ~100 KB allocated, naming the type
/// that crossed the mark), tallied by type: where the bytes per request come from, without a profiler.
/// </summary>
internal sealed class AllocationSampler : System.Diagnostics.Tracing.EventListener
{
    private readonly Dictionary<string, long> _ticks = [];
    private readonly Lock _lock = new();

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1); // GC keyword
        }
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
    {
        if (e.EventName is not null && e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal) && e.Payload is { } payload)
        {
            int index = e.PayloadNames!.IndexOf("TypeName");
            string type = index >= 0 ? payload[index] as string ?? "?" : "?";
            lock (_lock)
            {
                _ticks[type] = _ticks.GetValueOrDefault(type) + 1;
            }
        }
    }

    /// <summary>Ticks per type since start (each tick stands for about 100 KB), most first; then resets.</summary>
    public string Report()
    {
        lock (_lock)
        {
            string report = string.Join("\n", _ticks.OrderByDescending(p => p.Value).Select(p => $"{p.Value}\t{p.Key}"));
            _ticks.Clear();
            return report;
        }
    }
}

internal sealed class JsonMessage
{
    public required string Message { get; init; }
}

/// <summary>Source-generated serialization: no reflection, so PublishAot works.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(JsonMessage))]
internal sealed partial class AppJsonContext : JsonSerializerContext;
