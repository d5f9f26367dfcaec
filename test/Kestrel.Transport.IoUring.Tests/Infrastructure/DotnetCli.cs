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
        ProcessStartInfo startInfo = ChildProcess.StartInfo(dotnet, arguments, workingDirectory);
        foreach (string variable in InheritedMsBuildVariables)
        {
            startInfo.Environment.Remove(variable);
        }

        startInfo.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        startInfo.Environment["DOTNET_NOLOGO"] = "1";
        startInfo.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";

        (int exitCode, string stdout, string stderr) = await ChildProcess.RunAsync(startInfo, timeout);
        return (exitCode, stdout + stderr);
    }

    /// <summary>Whether <paramref name="command"/> is an executable file in a PATH directory.</summary>
    public static bool IsOnPath(string command)
        => (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Any(dir => File.Exists(Path.Combine(dir, command)));
}
