// Serves a directory with StaticFileMiddleware over Kestrel, on the io_uring or the Sockets transport.
//   dotnet run -c Release --project samples/StaticFiles -- --transport iouring|sockets --root DIR --urls http://127.0.0.1:PORT
// With io_uring, files are read through the ring file sender (IoUringTransportOptions.UseRingFileSender)
// with no change to the app: StaticFileMiddleware calls SendFileAsync, which the transport serves.
using Microsoft.Extensions.FileProviders;

const string Usage = """
    Usage: StaticFiles --root DIR [--transport iouring|sockets] [--no-ring-sender] [--inline] [--urls URLS]
      --root            the directory served at /
      --transport       iouring (default) or sockets
      --no-ring-sender  with iouring: send files the way Kestrel does (UseRingFileSender = false)
      --inline          turn on UnsafePreferInlineScheduling of the chosen transport
      --urls            where to listen (default http://127.0.0.1:5000)
    """;

string transport = "iouring";
string? root = null;
bool ringSender = true;
bool inline = false;
string urls = "http://127.0.0.1:5000";
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--transport" when i + 1 < args.Length && args[i + 1] is "iouring" or "sockets":
            transport = args[++i];
            break;
        case "--root" when i + 1 < args.Length:
            root = args[++i];
            break;
        case "--no-ring-sender":
            ringSender = false;
            break;
        case "--inline":
            inline = true;
            break;
        case "--urls" when i + 1 < args.Length:
            urls = args[++i];
            break;
        default:
            Console.Error.WriteLine($"Unknown or incomplete argument '{args[i]}'.");
            Console.Error.WriteLine(Usage);
            return 2;
    }
}

if (root is null || !Directory.Exists(root))
{
    Console.Error.WriteLine(root is null ? "--root is required." : $"The directory '{root}' does not exist.");
    Console.Error.WriteLine(Usage);
    return 2;
}

WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });

// Warning by default so console logging does not slow a benchmark; the startup lines stay visible.
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
builder.Logging.AddFilter("Kestrel.Transport.IoUring", LogLevel.Information);

if (transport == "iouring")
{
    builder.WebHost.UseIoUring(o =>
    {
        o.UnsafePreferInlineScheduling = inline;
        o.UseRingFileSender = ringSender;
    });
}
else
{
    builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = inline);
}

builder.WebHost.UseUrls(urls);

WebApplication app = builder.Build();
using var files = new PhysicalFileProvider(Path.GetFullPath(root));
app.UseStaticFiles(new StaticFileOptions
{
    FileProvider = files,
    ServeUnknownFileTypes = true,
});

try
{
    await app.RunAsync();
    return 0;
}
catch (Exception ex) when (ex is IOException or PlatformNotSupportedException or InvalidOperationException)
{
    Console.Error.WriteLine($"StaticFiles failed to start: {ex.Message}");
    return 1;
}
