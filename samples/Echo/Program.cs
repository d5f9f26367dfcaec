// A raw TCP echo server: a Kestrel ConnectionHandler on the io_uring or the Sockets transport.
//   dotnet run -c Release --project samples/Echo -- --transport iouring|sockets --port PORT [--metrics [--metrics-port PORT]]
using System.Net;
using Echo;
using Microsoft.AspNetCore.Connections;
using OpenTelemetry.Metrics;

const string Usage = """
    Usage: Echo --transport iouring|sockets [--require-iouring] [--port PORT] [--metrics] [--metrics-port PORT]
      --transport        iouring (default) or sockets
      --require-iouring  with iouring: fail to start instead of falling back to Sockets (ThrowIfUnavailable)
      --port             TCP port on 127.0.0.1 (default 5001; 0 picks a free one)
      --metrics          serve the transport's and Kestrel's metrics at http://127.0.0.1:METRICS-PORT/metrics
      --metrics-port     HTTP port of /metrics (default 9464; 0 picks a free one)
    Echoes every byte it receives back to the sender.
    """;

string transport = "iouring";
bool requireIoUring = false;
int port = 5001;
bool metrics = false;
int metricsPort = 9464;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--transport" when i + 1 < args.Length && args[i + 1] is "iouring" or "sockets":
            transport = args[++i];
            break;
        case "--require-iouring":
            requireIoUring = true;
            break;
        case "--port" when i + 1 < args.Length && int.TryParse(args[i + 1], out port) && port is >= 0 and <= 65535:
            i++;
            break;
        case "--metrics":
            metrics = true;
            break;
        case "--metrics-port" when i + 1 < args.Length && int.TryParse(args[i + 1], out metricsPort) && metricsPort is >= 0 and <= 65535:
            i++;
            break;
        default:
            Console.Error.WriteLine($"Unknown or incomplete argument '{args[i]}'.");
            Console.Error.WriteLine(Usage);
            return 2;
    }
}

WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
builder.Logging.AddFilter("Kestrel.Transport.IoUring", LogLevel.Information);

if (transport == "iouring")
{
    builder.WebHost.UseIoUring(o => o.ThrowIfUnavailable = requireIoUring);
}
else
{
    builder.WebHost.UseSockets();
}

builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.Listen(IPAddress.Loopback, port, listen => listen.UseConnectionHandler<EchoHandler>());
    if (metrics)
    {
        // A second, HTTP, endpoint: the echo port speaks raw TCP.
        kestrel.Listen(IPAddress.Loopback, metricsPort);
    }
});

if (metrics)
{
    builder.Services.AddOpenTelemetry().WithMetrics(m => m
        .AddMeter("Kestrel.Transport.IoUring", "Microsoft.AspNetCore.Server.Kestrel")
        .AddPrometheusExporter());
}

WebApplication app = builder.Build();
if (metrics)
{
    app.UseOpenTelemetryPrometheusScrapingEndpoint();
}
try
{
    await app.RunAsync();
    return 0;
}
catch (Exception ex) when (ex is IOException or PlatformNotSupportedException or InvalidOperationException)
{
    Console.Error.WriteLine($"Echo failed to start: {ex.Message}");
    return 1;
}
