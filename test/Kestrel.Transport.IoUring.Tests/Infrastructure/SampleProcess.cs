using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// A sample app (samples/NAME) run as its own process with `dotnet NAME.dll ARGS`: the same command
/// line as `dotnet run --project samples/NAME -- ARGS`, without rebuilding. The dll is the one built
/// with the tests (the test project references the samples), in the same configuration.
/// </summary>
public sealed partial class SampleProcess : IAsyncDisposable
{
    private const int SIGTERM = 15;

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _outputClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _openStreams = 2;

    private SampleProcess(Process process) => _process = process;

    /// <summary>Everything the process wrote, stdout and stderr interleaved, one entry per line.</summary>
    public string Output => string.Join(Environment.NewLine, _lines);

    public static string DllPath(string name)
    {
        string configuration = typeof(SampleProcess).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";
        string path = Path.Combine(RepositoryRoot(), "samples", name, "bin", configuration, "net10.0", name + ".dll");
        Assert.True(File.Exists(path), $"The sample {name} is not built at {path}.");
        return path;
    }

    /// <summary>The process id, for reading /proc/PID.</summary>
    public int Id => _process.Id;

    /// <param name="fileDescriptorLimit">When set, runs under `bash -c 'ulimit -n LIMIT; exec dotnet ...'`.</param>
    public static SampleProcess Start(string name, IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null, int? fileDescriptorLimit = null)
    {
        string dotnet = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        return StartProcess(dotnet, [DllPath(name), .. arguments], environment, fileDescriptorLimit);
    }

    /// <summary>Runs an executable directly, such as a sample published with Native AOT.</summary>
    public static SampleProcess StartExecutable(string path, IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null)
        => StartProcess(path, arguments, environment, fileDescriptorLimit: null);

    private static SampleProcess StartProcess(string fileName, IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment, int? fileDescriptorLimit)
    {
        var start = new ProcessStartInfo(fileDescriptorLimit is null ? fileName : "bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (fileDescriptorLimit is { } limit)
        {
            // exec: the server is this process itself, so Id and signals reach it.
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add($"ulimit -n {limit} && exec \"$0\" \"$@\"");
            start.ArgumentList.Add(fileName);
        }

        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        // A plain console logger with no colours and no buffering surprises.
        start.Environment["DOTNET_SYSTEM_CONSOLE_ALLOW_ANSI_COLOR_REDIRECTION"] = "false";
        start.Environment.Remove("IOURING_FORCE_UNAVAILABLE");
        foreach ((string key, string value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        var sample = new SampleProcess(new Process { StartInfo = start });
        sample._process.OutputDataReceived += (_, e) => sample.OnLine(e.Data);
        sample._process.ErrorDataReceived += (_, e) => sample.OnLine(e.Data);
        sample._process.Start();
        sample._process.BeginOutputReadLine();
        sample._process.BeginErrorReadLine();
        return sample;
    }

    /// <summary>The address from the host's "Now listening on:" line; fails if the process exits first.</summary>
    public async Task<Uri> WaitForListeningAsync()
    {
        Task exited = _process.WaitForExitAsync();
        Task first = await Task.WhenAny(_listening.Task, exited).WaitAsync(Timeouts.Step);
        if (first != _listening.Task)
        {
            await _outputClosed.Task.WaitAsync(Timeouts.Step);
            Assert.Fail($"The sample exited ({_process.ExitCode}) before listening:{Environment.NewLine}{Output}");
        }

        return await _listening.Task;
    }

    /// <summary>Waits for the process to end by itself; returns its exit code.</summary>
    public async Task<int> WaitForExitAsync()
    {
        await _process.WaitForExitAsync().WaitAsync(Timeouts.Step);
        await _outputClosed.Task.WaitAsync(Timeouts.Step);
        return _process.ExitCode;
    }

    /// <summary>Asks the process to shut down gracefully (SIGTERM, as systemd or Ctrl+C would); returns its exit code.</summary>
    public async Task<int> StopAsync()
    {
        if (!_process.HasExited)
        {
            _ = kill(_process.Id, SIGTERM);
        }

        return await WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _ = kill(_process.Id, SIGTERM);
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
            }
        }
        catch (TimeoutException)
        {
            _process.Kill(entireProcessTree: true);
        }
        finally
        {
            _process.Dispose();
        }
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            if (Interlocked.Decrement(ref _openStreams) == 0)
            {
                _outputClosed.TrySetResult();
            }

            return;
        }

        _lines.Enqueue(line);
        Match match = ListeningLine().Match(line);
        if (match.Success)
        {
            _listening.TrySetResult(new Uri(match.Groups[1].Value));
        }
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

    [GeneratedRegex(@"Now listening on: (\S+)")]
    private static partial Regex ListeningLine();

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}
