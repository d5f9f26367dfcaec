using System.Net;
using System.Text.RegularExpressions;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Packaging;

/// <summary>
/// Publishes the samples with Native AOT, as a user would, and runs the native binaries on io_uring.
/// Only the real ILCompiler proves the transport and the samples are trim- and AOT-clean: the Roslyn
/// analyzers do not see into package dependencies. Each publish takes one to two minutes.
/// </summary>
[Collection(DotnetCliCollection.Name)]
public sealed partial class AotPublishTests(ITestOutputHelper output)
{
    private const string IoUringStartedLine = "Kestrel is serving with the io_uring transport";

    // A cold AOT compile is 1-2 min on two busy cores; the bound is for a stuck toolchain.
    private static readonly TimeSpan PublishTimeout = TimeSpan.FromMinutes(5);

    [SkippableFact]
    public async Task PublishAot_Echo_NoTrimOrAotWarningsAndEchoesOnIoUring()
    {
        using var publish = new TempDirectory("kestrel-iouring-aot-echo-");
        string binary = await PublishAotAsync("Echo", publish.Path);
        IoUringRequirement.Ensure();

        await using SampleProcess sample = SampleProcess.StartExecutable(binary, ["--transport", "iouring", "--require-iouring", "--port", "0"]);
        Uri address = await sample.WaitForListeningAsync();

        byte[] sent = new byte[64 * 1024];
        Random.Shared.NextBytes(sent);
        await using (RawConnection connection = await RawConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, address.Port)))
        {
            Task send = connection.SendAsync(sent);
            Task<byte[]> receive = connection.ReadExactlyAsync(sent.Length);
            await Task.WhenAll(send, receive).WaitAsync(Timeouts.Step);
            byte[] received = await receive;
            Assert.True(sent.AsSpan().SequenceEqual(received), "The echoed bytes differ from the sent ones.");
        }

        Assert.Equal(0, await sample.StopAsync());
        output.WriteLine(sample.Output);
        Assert.Contains(IoUringStartedLine, sample.Output);
        Assert.DoesNotContain("fail:", sample.Output);
    }

    [SkippableFact]
    public async Task PublishAot_PlatformBenchmarksWithMetrics_NoTrimOrAotWarningsAndServesOnIoUring()
    {
        using var publish = new TempDirectory("kestrel-iouring-aot-platform-");
        string binary = await PublishAotAsync("PlatformBenchmarks", publish.Path);
        IoUringRequirement.Ensure();

        // --metrics too: the OpenTelemetry exporter is the only third-party code in the samples.
        await using SampleProcess sample = SampleProcess.StartExecutable(binary,
            ["--transport", "iouring", "--require-iouring", "--metrics", "--urls", "http://127.0.0.1:0"]);
        Uri baseUri = await sample.WaitForListeningAsync();
        using (var client = new HttpClient { BaseAddress = baseUri, Timeout = Timeouts.Step })
        {
            Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext"));
            Assert.Equal("""{"message":"Hello, World!"}""", await client.GetStringAsync("/json"));
            string metrics = await client.GetStringAsync("/metrics");
            Assert.Matches(AcceptedConnectionsLine(), metrics);
        }

        Assert.Equal(0, await sample.StopAsync());
        output.WriteLine(sample.Output);
        Assert.Contains(IoUringStartedLine, sample.Output);
        Assert.DoesNotContain("fail:", sample.Output);
    }

    [SkippableFact]
    public async Task PublishAot_StaticFiles_NoTrimOrAotWarningsAndServesFilesOnIoUring()
    {
        using var publish = new TempDirectory("kestrel-iouring-aot-static-");
        string binary = await PublishAotAsync("StaticFiles", publish.Path);
        IoUringRequirement.Ensure();

        using var root = new TempDirectory("kestrel-iouring-aot-static-root-");
        byte[] content = new byte[200_000];
        new Random(42).NextBytes(content);
        await File.WriteAllBytesAsync(Path.Combine(root.Path, "file.bin"), content);

        // The ring file sender runs in the native binary too: StaticFileMiddleware -> SendFileAsync -> ring reads.
        await using SampleProcess sample = SampleProcess.StartExecutable(binary,
            ["--transport", "iouring", "--root", root.Path, "--urls", "http://127.0.0.1:0"]);
        Uri baseUri = await sample.WaitForListeningAsync();
        using (var client = new HttpClient { BaseAddress = baseUri, Timeout = Timeouts.Step })
        {
            Assert.Equal(content, await client.GetByteArrayAsync("/file.bin"));
        }

        Assert.Equal(0, await sample.StopAsync());
        output.WriteLine(sample.Output);
        Assert.Contains(IoUringStartedLine, sample.Output);
        Assert.DoesNotContain("fail:", sample.Output);
    }

    /// <summary>Publishes samples/NAME with PublishAot into <paramref name="directory"/>; returns the native binary's path.</summary>
    private async Task<string> PublishAotAsync(string sample, string directory)
    {
        EnsureToolchain();
        // --artifacts-path keeps this publish's restore and build out of the source tree's obj/ and bin/:
        // a restore for linux-x64 with PublishAot rewrites the sample's and the library's
        // project.assets.json and nuget.g.props, and the next ordinary build would then recompile the
        // library and everything above it. Under artifacts/ (git-ignored) it stays incremental across runs.
        string[] arguments =
        [
            "publish", RepositoryLayout.PathOf("samples", sample), "-c", "Release", "-r", "linux-x64",
            "-p:PublishAot=true", "-o", directory, "--artifacts-path", RepositoryLayout.PathOf("artifacts", "aot-publish"),
            "-nologo", "-nodeReuse:false", "-p:UseSharedCompilation=false",
        ];
        (int exitCode, string log) = await DotnetCli.RunAsync(arguments, RepositoryLayout.Root, PublishTimeout);
        output.WriteLine(log);

        Assert.True(exitCode == 0, $"dotnet {string.Join(' ', arguments)} exited with {exitCode}:\n{log}");
        // Trim (IL2xxx) and AOT (IL3xxx) warnings are errors through TreatWarningsAsErrors, so a warning
        // fails the publish above; this also catches one printed by a tool that ignores that switch.
        Assert.DoesNotMatch(TrimOrAotWarning(), log);
        string binary = Path.Combine(directory, sample);
        Assert.True(File.Exists(binary), $"The publish wrote no native binary {binary}:\n{log}");
        Assert.False(File.Exists(Path.Combine(directory, sample + ".dll")), "The publish wrote an IL assembly: it was not a Native AOT publish.");
        return binary;
    }

    /// <summary>
    /// The ILCompiler package comes from NuGet; linking needs clang and objcopy (binutils) from the system.
    /// Skips where they are missing, but fails under IOURING_REQUIRED=1 or CI=true: CI must not go green
    /// by not publishing.
    /// </summary>
    private static void EnsureToolchain()
    {
        string[] missing = [.. new[] { "clang", "objcopy" }.Where(tool => !DotnetCli.IsOnPath(tool))];
        if (missing.Length == 0)
        {
            return;
        }

        string message = $"Native AOT publishing needs {string.Join(" and ", missing)} (apt-get install clang zlib1g-dev, or run build/install-test-deps.sh).";
        bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
        if (IoUringRequirement.IsRequired || ci)
        {
            Assert.Fail(message);
        }

        Skip.If(true, message);
    }

    [GeneratedRegex(@"warning (IL\d{4}|AOT)", RegexOptions.IgnoreCase)]
    private static partial Regex TrimOrAotWarning();

    [GeneratedRegex(@"^iouring_transport_accepted_connections_total\{[^}]*iouring_reactor=""\d+""[^}]*\} [1-9]", RegexOptions.Multiline)]
    private static partial Regex AcceptedConnectionsLine();

    private sealed class TempDirectory(string prefix) : IDisposable
    {
        private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory(prefix);

        public string Path => _directory.FullName;

        public void Dispose() => _directory.Delete(recursive: true);
    }
}
