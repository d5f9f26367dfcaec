using System.Diagnostics;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Runs the dotnet CLI as a child process with a time limit, for tests that must run the real SDK.</summary>
internal static class DotnetCli
{
    // The dotnet CLI that runs the tests exports these to its children; the nested dotnet must find its own.
    private static readonly string[] InheritedMsBuildVariables =
        ["MSBuildSDKsPath", "MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "MSBuildLoadMicrosoftTargetsReadOnly"];

    /// <summary>
    /// Runs <c>dotnet ARGUMENTS</c> in <paramref name="workingDirectory"/>; returns the exit code and
    /// stdout followed by stderr. Kills the process tree and throws <see cref="TimeoutException"/> after
    /// <paramref name="timeout"/>. Pass <c>-nodeReuse:false -p:UseSharedCompilation=false</c> to builds: a
    /// build node left running would hold the redirected output open.
    /// </summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(IEnumerable<string> arguments, string workingDirectory, TimeSpan timeout)
    {
        // DOTNET_HOST_PATH is the dotnet that runs the tests; otherwise PATH decides.
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var startInfo = new ProcessStartInfo(dotnet)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        foreach (string variable in InheritedMsBuildVariables)
        {
            startInfo.Environment.Remove(variable);
        }

        startInfo.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        startInfo.Environment["DOTNET_NOLOGO"] = "1";
        startInfo.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";

        using Process process = Process.Start(startInfo) ?? throw new InvalidOperationException($"Could not start {dotnet}.");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"dotnet {string.Join(' ', startInfo.ArgumentList)} did not finish within {timeout.TotalSeconds} s.");
        }

        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>Whether <paramref name="command"/> is an executable file in a PATH directory.</summary>
    public static bool IsOnPath(string command)
        => (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Any(dir => File.Exists(Path.Combine(dir, command)));
}
