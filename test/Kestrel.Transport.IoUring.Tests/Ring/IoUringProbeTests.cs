using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Ring;

[Collection(SerialCollection.Name)]
public class IoUringProbeTests
{
    [SkippableTheory]
    [InlineData("1")]
    [InlineData("true")]
    public void Run_ForceUnavailableVariableSet_ReportsForcedByEnvironmentNamingTheVariable(string value)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "The variable is checked after the platform.");

        // Settle the process-wide probe first, so that no other test can ever observe the forced value.
        _ = IoUringProbe.Current;
        string? previous = Environment.GetEnvironmentVariable(IoUringProbe.ForceUnavailableVariable);
        IoUringProbe probe;
        try
        {
            Environment.SetEnvironmentVariable(IoUringProbe.ForceUnavailableVariable, value);
            probe = IoUringProbe.Run(new RingOptions { SqEntries = 8, CqEntries = 16, RegisterRingFd = false });
        }
        finally
        {
            Environment.SetEnvironmentVariable(IoUringProbe.ForceUnavailableVariable, previous);
        }

        Assert.False(probe.IsSupported);
        Assert.Equal(UnavailableKind.ForcedByEnvironment, probe.Kind);
        Assert.Contains("IOURING_FORCE_UNAVAILABLE", probe.Reason, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Run_ForceUnavailableVariableUnset_ProbesTheKernel()
    {
        IoUringRequirement.Ensure();
        string? previous = Environment.GetEnvironmentVariable(IoUringProbe.ForceUnavailableVariable);
        Skip.If(previous is not null, $"{IoUringProbe.ForceUnavailableVariable} is set for this run.");
        IoUringProbe probe = IoUringProbe.Run(new RingOptions { SqEntries = 8, CqEntries = 16, RegisterRingFd = false });
        Assert.True(probe.IsSupported, probe.Reason);
        Assert.Null(probe.Reason);
        Assert.True(probe.SupportsOpcode(IoUringNative.IORING_OP_NOP));
        Assert.True(probe.HasFeature(IoUringNative.IORING_FEAT_NODROP));
    }

    [Theory]
    [InlineData(Libc.EPERM, (int)UnavailableKind.Blocked, new[] { "EPERM" })]
    [InlineData(Libc.ENOSYS, (int)UnavailableKind.SyscallMissing, new[] { "ENOSYS", "CONFIG_IO_URING", "Linux 6.1" })]
    [InlineData(Libc.ENOMEM, (int)UnavailableKind.OutOfMemory, new[] { "ENOMEM", "RLIMIT_MEMLOCK", "ulimit -l" })]
    public void FromSetupErrno_KnownErrno_GivesItsKindAndAnActionableReason(int errno, int kind, string[] mentions)
    {
        IoUringProbe probe = IoUringProbe.FromSetupErrno(errno);
        Assert.False(probe.IsSupported);
        Assert.Equal((UnavailableKind)kind, probe.Kind); // int: the enum is internal
        Assert.Equal(errno, probe.Errno);
        Assert.NotNull(probe.Reason);
        foreach (string mention in mentions)
        {
            Assert.Contains(mention, probe.Reason, StringComparison.Ordinal);
        }

        if (errno == Libc.EPERM)
        {
            // Either the sysctl (with the command that changes it) or the seccomp profile is named.
            Assert.True(
                probe.Reason!.Contains("sysctl -w kernel.io_uring_disabled=0", StringComparison.Ordinal) ||
                probe.Reason.Contains("seccomp", StringComparison.Ordinal),
                probe.Reason);
        }
    }

    [Fact]
    public void FromSetupErrno_DifferentErrnos_GiveDistinctKindsAndReasons()
    {
        IoUringProbe[] probes = [.. new[] { Libc.EPERM, Libc.ENOSYS, Libc.ENOMEM, Libc.EINVAL }.Select(IoUringProbe.FromSetupErrno)];
        Assert.Equal(probes.Length, probes.Select(p => p.Kind).Distinct().Count());
        Assert.Equal(probes.Length, probes.Select(p => p.Reason).Distinct().Count());
        Assert.DoesNotContain(probes, p => p.Kind == UnavailableKind.None);
        Assert.Equal(UnavailableKind.Other, probes[3].Kind);
        Assert.Contains("EINVAL", probes[3].Reason, StringComparison.Ordinal);
    }
}
