using System.Text.Json;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Packaging;

/// <summary>Checks the example seccomp profile shipped in docs/ for containers that must allow io_uring.</summary>
public class SeccompProfileTests
{
    private static JsonDocument Load()
        => JsonDocument.Parse(File.ReadAllText(RepositoryLayout.PathOf("docs", "seccomp-io_uring.json")));

    private static IEnumerable<string> Names(JsonElement rule)
        => rule.GetProperty("names").EnumerateArray().Select(n => n.GetString() ?? "");

    [Fact]
    public void SeccompProfile_Parse_AllowRuleContainsIoUringSyscalls()
    {
        using JsonDocument profile = Load();

        JsonElement[] allowRules = [.. profile.RootElement.GetProperty("syscalls").EnumerateArray()
            .Where(r => r.GetProperty("action").GetString() == "SCMP_ACT_ALLOW" && !r.TryGetProperty("args", out _))];
        JsonElement allow = Assert.Single(allowRules);
        string[] names = [.. Names(allow)];

        Assert.Contains("io_uring_setup", names);
        Assert.Contains("io_uring_enter", names);
        Assert.Contains("io_uring_register", names);
        // A few the .NET runtime and Kestrel cannot start without, to catch a truncated list.
        Assert.Contains("membarrier", names);
        Assert.Contains("epoll_pwait", names);
        Assert.Contains("accept4", names);
        Assert.Equal(names.Length, names.Distinct(StringComparer.Ordinal).Count());
    }

    [Fact]
    public void SeccompProfile_Parse_DeniesByDefaultOn64BitArchitectures()
    {
        using JsonDocument profile = Load();
        JsonElement root = profile.RootElement;

        Assert.Equal("SCMP_ACT_ERRNO", root.GetProperty("defaultAction").GetString());
        string[] architectures = [.. root.GetProperty("architectures").EnumerateArray().Select(a => a.GetString() ?? "")];
        Assert.Equal(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"], architectures);
    }

    [Fact]
    public void SeccompProfile_Parse_Clone3FailsWithEnosysSoGlibcFallsBackToClone()
    {
        // With EPERM instead of ENOSYS glibc does not fall back to clone, and the runtime cannot start threads.
        using JsonDocument profile = Load();

        JsonElement clone3 = Assert.Single(profile.RootElement.GetProperty("syscalls").EnumerateArray(), r => Names(r).Contains("clone3"));
        Assert.Equal("SCMP_ACT_ERRNO", clone3.GetProperty("action").GetString());
        Assert.Equal(38, clone3.GetProperty("errnoRet").GetInt32());
    }
}
