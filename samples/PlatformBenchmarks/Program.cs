// TechEmpower-style /plaintext and /json over Kestrel, on the io_uring or the Sockets transport.
//   dotnet run -c Release --project samples/PlatformBenchmarks -- --transport iouring|sockets [--inline] [--metrics] --urls http://127.0.0.1:PORT
//     [--Kestrel:Transport:IoUring:OPTION=VALUE ...]
using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization;
using OpenTelemetry.Metrics;

const string Usage = """
    Usage: PlatformBenchmarks --transport iouring|sockets [--inline] [--require-iouring] [--metrics] [--urls URLS]
      --transport        iouring (default) or sockets
      --inline           turn on UnsafePreferInlineScheduling of the chosen transport
      --require-iouring  with iouring: fail to start instead of falling back to Sockets (ThrowIfUnavailable)
      --metrics          serve the transport's, Kestrel's and hosting's metrics at GET /metrics (Prometheus text)
      --urls             where to listen (default http://127.0.0.1:5000)
      --Kestrel:KEY=VALUE  configuration, e.g. --Kestrel:Transport:IoUring:UseMultishotAccept=false
    Serves GET /plaintext and GET /json.
    """;

string transport = "iouring";
bool inline = false;
bool requireIoUring = false;
bool metrics = false;
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

internal sealed class JsonMessage
{
    public required string Message { get; init; }
}

/// <summary>Source-generated serialization: no reflection, so PublishAot works.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(JsonMessage))]
internal sealed partial class AppJsonContext : JsonSerializerContext;
