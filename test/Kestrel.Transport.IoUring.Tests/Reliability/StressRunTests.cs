using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>
/// The short CI run of test/Kestrel.Transport.IoUring.Stress against io_uring: Echo and
/// PlatformBenchmarks under chaos for about 75 s, every byte verified, the servers back to baseline.
/// </summary>
public partial class StressRunTests(ITestOutputHelper output)
{
    private const int DurationSeconds = 75;

    [SkippableFact]
    public async Task StressTool_IoUringShortRun_ExitsZeroWithNoErrors()
    {
        IoUringRequirement.Ensure();
        string configuration = typeof(StressRunTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";
        string dll = Path.Combine(RepositoryRoot(), "test", "Kestrel.Transport.IoUring.Stress", "bin", configuration, "net10.0", "Kestrel.Transport.IoUring.Stress.dll");
        Assert.True(File.Exists(dll), $"The stress tool is not built at {dll}.");

        string dotnet = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[] { dll, "--transport", "iouring", "--duration", DurationSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment.Remove("IOURING_FORCE_UNAVAILABLE");
        using var process = new Process { StartInfo = start };
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lines.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lines.Enqueue(e.Data); } };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            // The load, two warm-ups, the settle checks and the stops: well under 5 minutes.
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(DurationSeconds + 240));
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            output.WriteLine(string.Join(Environment.NewLine, lines));
            Assert.Fail("The stress run did not finish in time.");
        }

        process.WaitForExit(); // flushes the redirected output
        string text = string.Join(Environment.NewLine, lines);
        output.WriteLine(text);
        Match result = ResultLine().Match(text);
        Assert.True(result.Success, "The stress run printed no RESULT line.");
        Assert.Equal("0", result.Groups["errors"].Value);
        Assert.True(long.Parse(result.Groups["bytes"].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, "The stress run verified no bytes.");
        Assert.Equal(0, process.ExitCode);
    }

    private static string RepositoryRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Kestrel.Transport.IoUring.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException($"No Kestrel.Transport.IoUring.sln above {AppContext.BaseDirectory}.");
    }

    [GeneratedRegex(@"RESULT transport=iouring .*bytes_verified=(?<bytes>\d+) .*errors=(?<errors>\d+)")]
    private static partial Regex ResultLine();
}
