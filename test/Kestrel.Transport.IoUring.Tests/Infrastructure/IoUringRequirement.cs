using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// Decides whether a test that needs io_uring may run. Where io_uring is unavailable the test is
/// skipped with the probe's reason, unless IOURING_REQUIRED=1 (set by .ci/run): then it fails, so CI
/// can never go green by silently not exercising the kernel.
/// </summary>
public static class IoUringRequirement
{
    public const string RequiredVariable = "IOURING_REQUIRED";

    public static bool IsRequired
    {
        get
        {
            string? value = Environment.GetEnvironmentVariable(RequiredVariable);
            return value is "1" || string.Equals(value, "true", StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>Call first in every test that needs io_uring.</summary>
    public static void Ensure()
    {
        IoUringProbe probe = IoUringProbe.Current;
        if (probe.IsSupported)
        {
            return;
        }

        if (IsRequired)
        {
            Assert.Fail($"io_uring is required ({RequiredVariable}=1) but unavailable: {probe.Reason}");
        }

        Skip.If(true, $"io_uring unavailable: {probe.Reason}");
    }
}
