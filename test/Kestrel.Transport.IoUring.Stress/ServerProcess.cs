using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>
/// A sample server run as a child process with its documented command line (`dotnet NAME.dll ARGS`,
/// what `dotnet run --project samples/NAME -- ARGS` runs, without the rebuild), watched through /proc.
/// It inherits this process's RLIMIT_NOFILE, which <see cref="Limits.RaiseFileDescriptorLimit"/> raised.
/// </summary>
internal sealed partial class ServerProcess : IAsyncDisposable
{
    private const int SIGTERM = 15;
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _warnings;
    private long _failures;

    private ServerProcess(Process process, string commandLine)
    {
        _process = process;
        CommandLine = commandLine;
    }

    public string CommandLine { get; }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Lines the server logged at warn.</summary>
    public long Warnings => Interlocked.Read(ref _warnings);

    /// <summary>Lines the server logged at fail or crit, and unhandled exceptions.</summary>
    public long Failures => Interlocked.Read(ref _failures);

    public IEnumerable<string> Lines => _lines;

    public static string DllPath(string name)
    {
        string configuration = typeof(ServerProcess).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";
        string path = Path.Combine(RepositoryRoot(), "samples", name, "bin", configuration, "net10.0", name + ".dll");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The sample {name} is not built at {path} (build the solution in {configuration}).", path);
        }

        return path;
    }

    public static ServerProcess Start(string name, IReadOnlyList<string> arguments)
    {
        string dotnet = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string dll = DllPath(name);
        start.ArgumentList.Add(dll);
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["DOTNET_SYSTEM_CONSOLE_ALLOW_ANSI_COLOR_REDIRECTION"] = "false";
        start.Environment.Remove("IOURING_FORCE_UNAVAILABLE");
        var server = new ServerProcess(new Process { StartInfo = start }, $"dotnet {dll} {string.Join(' ', arguments)}");
        server._process.OutputDataReceived += (_, e) => server.OnLine(e.Data);
        server._process.ErrorDataReceived += (_, e) => server.OnLine(e.Data);
        server._process.Start();
        server._process.BeginOutputReadLine();
        server._process.BeginErrorReadLine();
        return server;
    }

    public async Task<Uri> WaitForListeningAsync(TimeSpan timeout)
    {
        Task first = await Task.WhenAny(_listening.Task, _process.WaitForExitAsync()).WaitAsync(timeout);
        if (first != _listening.Task)
        {
            throw new InvalidOperationException($"The server exited ({_process.ExitCode}) before listening:{Environment.NewLine}{string.Join(Environment.NewLine, _lines)}");
        }

        return await _listening.Task;
    }

    /// <summary>Resident set size in bytes (VmRSS of /proc/PID/status).</summary>
    public long ResidentBytes()
    {
        foreach (string line in File.ReadLines($"/proc/{Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }

    /// <summary>Open file descriptors (entries of /proc/PID/fd).</summary>
    public int FileDescriptorCount() => Directory.GetFileSystemEntries($"/proc/{Id}/fd").Length;

    /// <summary>Descriptors by kind (socket, anon_inode:[io_uring], pipe...), for the report when they grew.</summary>
    public string FileDescriptorKinds()
    {
        var kinds = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string fd in Directory.GetFileSystemEntries($"/proc/{Id}/fd"))
        {
            string target;
            try
            {
                target = new FileInfo(fd).LinkTarget ?? "?";
            }
            catch (IOException)
            {
                continue;
            }

            int bracket = target.IndexOf(":[", StringComparison.Ordinal);
            string kind = target.StartsWith("anon_inode:", StringComparison.Ordinal) ? target : bracket > 0 ? target[..bracket] : target.StartsWith('/') ? "file" : target;
            kinds[kind] = kinds.GetValueOrDefault(kind) + 1;
        }

        return string.Join(", ", kinds.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}={kv.Value}"));
    }

    /// <summary>User plus system CPU time the server has used.</summary>
    public TimeSpan CpuTime()
    {
        string stat = File.ReadAllText($"/proc/{Id}/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return TimeSpan.FromSeconds(ticks / 100.0);
    }

    /// <summary>SIGTERM (a graceful stop, as systemd does); returns the exit code, or null if it had to be killed.</summary>
    public async Task<int?> StopAsync(TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            _ = kill(_process.Id, SIGTERM);
        }

        try
        {
            await _process.WaitForExitAsync().WaitAsync(timeout);
            return _process.ExitCode;
        }
        catch (TimeoutException)
        {
            _process.Kill(entireProcessTree: true);
            return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await StopAsync(TimeSpan.FromSeconds(15));
        }

        _process.Dispose();
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        _lines.Enqueue(line);
        while (_lines.Count > 500 && _lines.TryDequeue(out _))
        {
        }

        if (line.StartsWith("warn:", StringComparison.Ordinal))
        {
            Interlocked.Increment(ref _warnings);
        }
        else if (line.StartsWith("fail:", StringComparison.Ordinal) || line.StartsWith("crit:", StringComparison.Ordinal) || line.StartsWith("Unhandled exception", StringComparison.Ordinal))
        {
            Interlocked.Increment(ref _failures);
        }

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

/// <summary>RLIMIT_NOFILE: thousands of connections need more than the usual soft limit of 1024.</summary>
internal static partial class Limits
{
    private const int RLIMIT_NOFILE = 7;

    /// <summary>Raises the soft limit to the hard limit (children inherit it); returns the new soft limit.</summary>
    public static ulong RaiseFileDescriptorLimit()
    {
        var limit = default(RLimit);
        if (getrlimit(RLIMIT_NOFILE, ref limit) != 0)
        {
            return 0;
        }

        if (limit.rlim_cur < limit.rlim_max)
        {
            var raised = new RLimit { rlim_cur = limit.rlim_max, rlim_max = limit.rlim_max };
            if (setrlimit(RLIMIT_NOFILE, ref raised) == 0)
            {
                return raised.rlim_cur;
            }
        }

        return limit.rlim_cur;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong rlim_cur;
        public ulong rlim_max;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getrlimit(int resource, ref RLimit limit);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setrlimit(int resource, ref RLimit limit);
}

/// <summary>Induces a full blocking GC in another .NET process through its diagnostics port, as dotnet-gcdump does.</summary>
internal static class RemoteGc
{
    private const long GCKeyword = 0x1;
    private const long GCHeapCollectKeyword = 0x800000;

    /// <summary>Returns once the GC has run (its GC/End event arrived) or after <paramref name="timeout"/>; false if it never ran.</summary>
    public static async Task<bool> CollectAsync(int pid, TimeSpan timeout)
    {
        var client = new Microsoft.Diagnostics.NETCore.Client.DiagnosticsClient(pid);
        var provider = new Microsoft.Diagnostics.NETCore.Client.EventPipeProvider(
            "Microsoft-Windows-DotNETRuntime", System.Diagnostics.Tracing.EventLevel.Informational, GCKeyword | GCHeapCollectKeyword);
        using Microsoft.Diagnostics.NETCore.Client.EventPipeSession session = await client.StartEventPipeSessionAsync([provider], requestRundown: false, circularBufferMB: 16, CancellationToken.None);
        // The trace itself is not parsed: enabling GCHeapCollect triggers the GC; give it time to finish.
        Task drain = session.EventStream.CopyToAsync(Stream.Null);
        await Task.Delay(timeout);
        await session.StopAsync(CancellationToken.None);
        await drain.WaitAsync(TimeSpan.FromSeconds(10));
        return true;
    }
}
